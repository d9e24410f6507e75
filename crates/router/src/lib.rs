//! The router: which deployment serves the next request, and which ones to avoid.
//!
//! One library for the live gateway and the simulator, so that a policy tried in simulation
//! is the policy that serves. It sees only what a gateway can see: the requests it has in
//! flight per target, the time to first token and time per output token it observed, the
//! failures it saw, and the figures it was configured with (weights, prices, priorities,
//! predicted latency and capacity from the performance model). It holds no clock: callers
//! pass the time in seconds, wall or virtual.
//!
//! Health is passive, as in Envoy's outlier detection and LiteLLM's cool-downs: a target that
//! fails `eject_after` times in a row is ejected for `cooldown_s`, then tried again. When
//! every eligible target is ejected the router still answers with one of them (Envoy's panic
//! routing), since refusing outright would turn a brief blip into lost requests.

use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// A routing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Each target in turn.
    RoundRobin,
    /// The fewest requests in flight relative to capacity.
    LeastOutstanding,
    /// The lowest expected time to the last token: observed (or predicted) time to first
    /// token plus output time, plus the queueing its load implies.
    Latency,
    /// Random in proportion to configured weights.
    Weighted,
    /// The cheapest target with spare capacity, spilling to the next cheapest.
    Cost,
    /// The most preferred target with spare capacity, spilling over in order.
    Priority,
}

impl Policy {
    /// Every policy, for help texts.
    pub const ALL: [Policy; 6] = [
        Policy::RoundRobin,
        Policy::LeastOutstanding,
        Policy::Latency,
        Policy::Weighted,
        Policy::Cost,
        Policy::Priority,
    ];

    /// The policy's name in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::LeastOutstanding => "least-outstanding",
            Policy::Latency => "latency",
            Policy::Weighted => "weighted",
            Policy::Cost => "cost",
            Policy::Priority => "priority",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown routing policy `{0}`; known: round-robin, least-outstanding, latency, weighted, cost, priority")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// A deployment the router can send requests to, with its configured figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Name, for reports and error messages.
    pub name: String,
    /// Share for the weighted policy.
    pub weight: f64,
    /// Price for the cost policy, USD per million output tokens; infinite where unknown, so
    /// that an unpriced target ranks last rather than first.
    pub usd_per_mtok: f64,
    /// Price of a million prompt tokens, where the target prices them apart (0 where they
    /// are priced into the output): the cost policy ranks a request's prompt and output
    /// together. Ranked by the output's price alone, 2,000-token prompts went to a
    /// deployment at $10 a million of them beside one at $0.10, 90 times dearer a request.
    pub input_usd_per_mtok: f64,
    /// Preference for the priority policy: lower goes first.
    pub priority: u32,
    /// Traffic classes the target takes; empty takes every class.
    pub classes: Vec<String>,
    /// Predicted time to first token when lightly loaded, in seconds, of a prompt of
    /// [`Target::ttft_prompt_tokens`] where that is known.
    pub ttft_s: f64,
    /// Predicted time per output token, in seconds.
    pub tpot_s: f64,
    /// Predicted time per output token with [`Target::capacity`] requests in flight, in
    /// seconds, where known (0 where not: taken as twice [`Target::tpot_s`]). How much a
    /// full batch slows each token differs tenfold between systems (a step that streams
    /// its weights for a lone request barely notices a second, one that fills the chips'
    /// arithmetic doubles), and a router that thought every target twice as slow full as
    /// idle sent a B200 pool beside an H100 one more than it could serve within the TPOT
    /// the H100s kept.
    pub tpot_full_s: f64,
    /// Its prompts run on replicas of their own (disaggregated serving): its first token
    /// waits for the prompts queued ahead of it there, not for the requests decoding, so it
    /// does not stretch with their load. Stretched as an aggregated replica's, a B200 unit's
    /// first tokens were expected past a 100 ms target under load while they came in 64 ms,
    /// and a wafer pool half of whose first tokens missed it took the requests.
    pub disaggregated: bool,
    /// Requests the target serves concurrently before they start to queue.
    pub capacity: f64,
    /// Longest request (prompt plus output tokens) the target can hold; `None` is no limit.
    pub max_context: Option<u32>,
    /// Prompt tokens a second the target prefills, all its replicas together, where known
    /// (0 where not): the prompts sent to it queue for that rate, and a new request's first
    /// token waits for those ahead of it.
    pub prefill_tok_s: f64,
    /// The prompt length [`Target::ttft_s`] is for, where known (0 where not: the router
    /// then learns from the target's first tokens how they grow with their prompts,
    /// [`Observed::ttft_s_per_prompt_token`]): a longer
    /// prompt's first token is expected to take as much longer as its length over this, a
    /// prompt's pass being as long as its tokens where it fills the chips' arithmetic, and a
    /// shorter prompt's as long as this one's (its pass no shorter than one step). Without
    /// it, a 125,000-token prompt was expected to start as soon on a GPU engine as a
    /// 1,000-token one, and went there after one answer from a wafer 22 times faster.
    pub ttft_prompt_tokens: f64,
}

impl Target {
    /// A target with neutral figures: weight 1, free, priority 0, every class, unknown
    /// latency (zero), capacity 1.
    pub fn named(name: &str) -> Self {
        Target {
            name: name.to_string(),
            weight: 1.0,
            usd_per_mtok: 0.0,
            input_usd_per_mtok: 0.0,
            priority: 0,
            classes: Vec::new(),
            ttft_s: 0.0,
            tpot_s: 0.0,
            tpot_full_s: 0.0,
            disaggregated: false,
            capacity: 1.0,
            max_context: None,
            prefill_tok_s: 0.0,
            ttft_prompt_tokens: 0.0,
        }
    }

    /// Whether this target serves requests of `class` (every class when it names none).
    pub fn takes(&self, class: Option<&str>) -> bool {
        self.classes.is_empty() || class.is_some_and(|c| self.classes.iter().any(|x| x == c))
    }

    fn holds(&self, tokens: Option<u32>) -> bool {
        match (self.max_context, tokens) {
            (Some(max), Some(n)) => n <= max,
            _ => true,
        }
    }
}

/// Passive health settings.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Consecutive failures that eject a target.
    pub eject_after: u32,
    /// Seconds an ejected target is left alone.
    pub cooldown_s: f64,
}

impl Default for Health {
    /// Three failures in a row, then 30 s out: quick enough to route around an outage within
    /// a handful of requests, long enough not to hammer a provider that is down.
    fn default() -> Self {
        Health {
            eject_after: 3,
            cooldown_s: 30.0,
        }
    }
}

/// What the router has seen of one target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    /// Requests sent and not yet ended.
    pub outstanding: u32,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Times the target was ejected.
    pub ejections: u64,
    /// Moving average of the observed time to first token, seconds, each observation taken
    /// back to an idle target's by the load it was made under (see [`Router::first_token`]).
    pub ttft_s: Option<f64>,
    /// Moving average of the observed time per output token, seconds, taken back to an idle
    /// target's as `ttft_s` is.
    pub tpot_s: Option<f64>,
    /// Moving average of how far each observed time per output token (taken back to an idle
    /// target's) lay from `tpot_s` before it, seconds: the spread of one request's time per
    /// token about the average, as TCP keeps its round trip's (Jacobson, "Congestion
    /// Avoidance and Control", SIGCOMM 1988; RFC 6298). It fades with `tpot_s`.
    pub tpot_dev_s: f64,
    /// When `ttft_s` and `tpot_s` were each last observed: they fade back towards the
    /// target's prediction, or the best they have been where that is better, as they age
    /// (see [`LEARNED_HALF_LIFE_S`]). Each keeps its own time: with one for both, the first
    /// tokens of the few requests sent to a target seen slow restarted the fade of its time
    /// per token, which no answer then corrected, and it stayed passed over for 300 s after
    /// a slowdown ended.
    seen_at: (f64, f64),
    /// The least `ttft_s` and `tpot_s` have been.
    best: (Option<f64>, Option<f64>),
    consecutive_failures: u32,
    ejected_until: f64,
    /// A request went to the target while it was ejected (panic routing): its success ends
    /// the ejection, the target shown to answer again.
    probed: bool,
    /// Until when the target asked to be left alone (a 429's `Retry-After`): passed over as
    /// an ejected one, without being one.
    resting_until: f64,
    /// Prompt tokens sent to the target and not yet prefilled, at `backlog_at`: each
    /// request's prompt joins it, and it drains at the target's prefill rate.
    backlog: f64,
    backlog_at: f64,
    /// How its first tokens grew with their prompts, where no prediction says
    /// ([`Target::ttft_prompt_tokens`] unknown: an upstream's).
    prompt: PromptFit,
}

/// A moving least-squares line through (prompt tokens, idle time to first token) pairs:
/// exponentially weighted means, variance and covariance, each observation weighing as it
/// does in the router's moving averages, updated incrementally (Finch, "Incremental
/// calculation of weighted mean and variance", 2009, section 9). Its slope is the seconds a
/// prompt token adds to a target's first token. Taken as one figure whatever the prompt, an
/// upstream's first token was expected as soon for a 100,000-token prompt as for a
/// 100-token one, and a provider whose long prompts took seconds kept drawing them beside
/// one that took them in a fraction of that.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PromptFit {
    seen: bool,
    mean_x: f64,
    mean_y: f64,
    var_x: f64,
    cov_xy: f64,
}

impl PromptFit {
    /// Learns a first token of `y` seconds (idle) for a prompt of `x` tokens, where `kept`
    /// of what was learned still counts (as in [`ewma`]).
    fn learn(&mut self, x: f64, y: f64, kept: f64) {
        if !self.seen {
            *self = PromptFit {
                seen: true,
                mean_x: x,
                mean_y: y,
                var_x: 0.0,
                cov_xy: 0.0,
            };
            return;
        }
        let a = 1.0 - (1.0 - EWMA_ALPHA) * kept.clamp(0.0, 1.0);
        let (dx, dy) = (x - self.mean_x, y - self.mean_y);
        self.mean_x += a * dx;
        self.mean_y += a * dy;
        self.var_x = (1.0 - a) * (self.var_x + a * dx * dx);
        self.cov_xy = (1.0 - a) * (self.cov_xy + a * dx * dy);
    }

    /// Seconds a prompt token adds to a first token, where the prompts seen spread widely
    /// enough to tell ([`PROMPT_SPREAD`]); never below zero, a longer prompt never quicker.
    fn slope(&self) -> Option<f64> {
        let spread = self.var_x.sqrt();
        (spread >= (PROMPT_SPREAD * self.mean_x).max(MIN_PROMPT_SPREAD_TOKENS))
            .then(|| (self.cov_xy / self.var_x).max(0.0))
    }
}

/// How widely, as a share of their mean, the prompts a target was seen with must spread
/// (standard deviation) before the router takes their first tokens' growth with length as
/// learned: prompts of nearly one length tell the noise of their times, not a slope.
const PROMPT_SPREAD: f64 = 0.25;

/// ... and at least this many tokens, for prompts that are all short.
const MIN_PROMPT_SPREAD_TOKENS: f64 = 64.0;

/// A first token expected of a prompt shorter than those seen is at least this share of
/// theirs: a line drawn through long prompts' times may cross zero before a short one.
const SHORTEST_TTFT_SHARE: f64 = 0.1;

impl Observed {
    /// Seconds a prompt token adds to the target's first token, as learned from its answers
    /// where no prediction says (an upstream's); `None` until its prompts spread widely
    /// enough to tell.
    pub fn ttft_s_per_prompt_token(&self) -> Option<f64> {
        self.prompt.slope()
    }

    /// Learns an idle time per token `x` seen at `now`, where `kept` is the share of what
    /// was learned that still counts. The average moves from what was learned, not from the
    /// expectation faded towards the prediction since (see [`ewma`]). The spread starts at
    /// none: a first answer's distance from the prediction is the prediction's error, not
    /// the answers' spread.
    fn learn_tpot(&mut self, x: f64, kept: f64, now: f64) {
        if let Some(average) = self.tpot_s {
            self.tpot_dev_s = ewma(Some(kept * self.tpot_dev_s), (x - average).abs(), kept);
        }
        let x = ewma(self.tpot_s, x, kept);
        self.tpot_s = Some(x);
        self.best.1 = Some(self.best.1.map_or(x, |b| b.min(x)));
        self.seen_at.1 = now;
    }
}

/// Weight of the newest observation in the moving averages: about the last ten requests
/// count, so a slowing provider shows within seconds at production rates.
const EWMA_ALPHA: f64 = 0.1;

/// Seconds over which what the router learned of a target counts half as much against its
/// prediction, no newer observation coming. A target seen slow (a burst queued on it) that
/// the latency policy then passes over sends no answer to correct it: without fading it
/// would be passed over for good; fading, it is tried again within a minute or two, and a
/// target still slow is seen so again at once.
pub const LEARNED_HALF_LIFE_S: f64 = 30.0;

/// How many spreads ([`Observed::tpot_dev_s`]) past its expected time per token a target is
/// taken to keep a request's within a TPOT target: with a normal spread, the mean plus twice
/// its mean absolute deviation (0.8 of a standard deviation) is about its 95th percentile.
/// Held to the mean alone, a pool the cost policy filled to the load whose mean TPOT was a
/// 50 ms class target let a third of its requests miss it.
const TPOT_SPREADS: f64 = 2.0;

/// Classes that keep turns of their own under round-robin; the rest share those of requests
/// of no class, so that the names clients send cannot grow the router without bound.
const MAX_CURSORS: usize = 64;

/// Output tokens assumed when a request does not say how many it wants.
const DEFAULT_OUTPUT_TOKENS: f64 = 256.0;

/// Time to first token assumed of a target that states no prediction, until it is observed:
/// a GPU cloud's at a moderate prompt. A zero in its place would make the target look
/// infinitely fast, however loaded, and draw every request to it.
pub const UNSTATED_TTFT_S: f64 = 0.5;

/// Time per output token assumed of a target that states no prediction, until it is
/// observed: a GPU cloud's at a moderate load (50 tokens a second).
pub const UNSTATED_TPOT_S: f64 = 0.02;

/// What the router expected of a target as it sent it a request, which the request's first
/// token is told with ([`Router::first_token`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sent {
    /// Seconds of prompts queued ahead of it, where the target's prefill rate is known.
    pub queued_s: f64,
    /// Requests in flight on the target before it, over its capacity.
    pub load: f64,
    /// Its prompt's tokens (0 where not known).
    pub prompt_tokens: u32,
}

impl Sent {
    /// As sent, but told with the prompt its engine prefilled: all but the `cached` tokens
    /// it found in its prefix cache. Counted whole, a prompt found nearly all cached taught
    /// the router a first token many times quicker than a prompt of that length takes.
    pub fn prefilled(self, cached: u32) -> Sent {
        Sent {
            prompt_tokens: self.prompt_tokens.saturating_sub(cached).max(1),
            ..self
        }
    }
}

/// What a request asks of the router.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// Its traffic class, if any.
    pub class: Option<&'a str>,
    /// Output tokens it expects (`max_tokens`), if known.
    pub output_tokens: Option<u32>,
    /// Targets already tried for this request.
    pub exclude: &'a [usize],
    /// A time-to-first-token target in seconds: targets expected to meet it, and the TPOT
    /// target where there is one, are preferred; when none is, every eligible target stays
    /// in play.
    pub ttft_target_s: Option<f64>,
    /// A time-per-output-token target in seconds, preferred as the TTFT target is: a
    /// replica that also prefills, its tokens slowed by other prompts' chunks past the
    /// target, took requests beside a disaggregated pool well within it.
    pub tpot_target_s: Option<f64>,
    /// Prompt tokens, when known: targets whose context cannot hold the prompt and the output
    /// are not eligible.
    pub prompt_tokens: Option<u32>,
    /// Of `exclude`, the targets the caller would try again (they failed this request for a
    /// fault of the moment): while one of them is in service, no ejected target is woken for
    /// the request (panic routing), and `pick` answers `None` for the caller to try them.
    pub again: &'a [usize],
}

/// The router over a fixed list of targets.
#[derive(Debug, Clone)]
pub struct Router {
    policy: Policy,
    targets: Vec<Target>,
    seen: Vec<Observed>,
    health: Health,
    /// Round-robin's next target for each class some target names (`None`: requests of any
    /// other class, or of none): a turn of one class is not taken from another's, so each
    /// class's targets share its requests evenly whichever other classes they serve.
    next: Vec<(Option<String>, usize)>,
    rng: u64,
}

impl Router {
    /// A router; `seed` drives the weighted policy's draws, so simulation is repeatable.
    pub fn new(policy: Policy, targets: Vec<Target>, health: Health, seed: u64) -> Self {
        let n = targets.len();
        Router {
            policy,
            targets,
            seen: vec![Observed::default(); n],
            health,
            next: Vec::new(),
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The targets, in configuration order.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// What the router has seen of target `i`.
    pub fn observed(&self, i: usize) -> &Observed {
        &self.seen[i]
    }

    /// Whether target `i` is ejected at `now`.
    pub fn is_ejected(&self, i: usize, now: f64) -> bool {
        self.seen[i].ejected_until > now
    }

    /// Seconds from `now` until the first ejected or resting target is tried again, or
    /// `None` when none is.
    pub fn back_in(&self, now: f64) -> Option<f64> {
        (0..self.seen.len())
            .map(|i| self.back_at(i) - now)
            .filter(|&t| t > 0.0)
            .min_by(f64::total_cmp)
    }

    /// Seconds from `now` until the first target of `class` resting at its own request is
    /// asked again, or `None` when none is resting.
    pub fn rest_left(&self, now: f64, class: Option<&str>) -> Option<f64> {
        self.seen
            .iter()
            .zip(&self.targets)
            .filter(|(_, t)| t.takes(class))
            .map(|(s, _)| s.resting_until - now)
            .filter(|&t| t > 0.0)
            .min_by(f64::total_cmp)
    }

    /// When target `i` is tried again: the end of its ejection or of its rest.
    fn back_at(&self, i: usize) -> f64 {
        self.seen[i].ejected_until.max(self.seen[i].resting_until)
    }

    /// The target for a request, or `None` when no target takes its class, every one was
    /// already tried, or every one left is resting at its own request.
    pub fn pick(&mut self, now: f64, ask: &Ask<'_>) -> Option<usize> {
        let tokens = ask
            .prompt_tokens
            .map(|p| p.saturating_add(ask.output_tokens.unwrap_or(0)));
        let n = ask.output_tokens.map_or(DEFAULT_OUTPUT_TOKENS, f64::from);
        let eligible = |i: &usize| {
            !ask.exclude.contains(i)
                && self.targets[*i].takes(ask.class)
                && self.targets[*i].holds(tokens)
        };
        let mut pool: Vec<usize> = (0..self.targets.len())
            .filter(eligible)
            .filter(|&i| self.back_at(i) <= now)
            .collect();
        // What each target is expected to take for this request, where a target or the
        // policy asks: its first token, its time per token and the spread of that.
        let expected: Vec<(f64, f64, f64)> = if ask.ttft_target_s.is_some()
            || ask.tpot_target_s.is_some()
            || self.policy == Policy::Latency
        {
            (0..self.targets.len())
                .map(|i| self.expect(i, now, ask.prompt_tokens, n))
                .collect()
        } else {
            Vec::new()
        };
        if ask.ttft_target_s.is_some() || ask.tpot_target_s.is_some() {
            let meets: Vec<usize> = pool
                .iter()
                .copied()
                .filter(|&i| {
                    let (ttft, tpot, spread) = expected[i];
                    ask.ttft_target_s.is_none_or(|l| ttft <= l)
                        && ask
                            .tpot_target_s
                            .is_none_or(|l| tpot + TPOT_SPREADS * spread <= l)
                })
                .collect();
            if !meets.is_empty() {
                pool = meets;
            }
        }
        if pool.is_empty() {
            // A target this request may try again that is in service comes before any
            // ejected one: woken for a retry, a deployment cooling down was asked (and,
            // hanging, held the request until its first-token limit) while a healthy one had
            // failed once, and its failure started its cool-down again.
            if ask.again.iter().any(|&i| {
                self.targets[i].takes(ask.class)
                    && self.targets[i].holds(tokens)
                    && self.back_at(i) <= now
            }) {
                return None;
            }
            // Panic routing, where every eligible target is ejected: the one whose cool-down
            // ends first, so that a provider that has recovered is found at once rather than
            // a model refused for what was only an inference from failures. A target resting
            // at its own request (a 429's `Retry-After`) is not asked before its rest ends.
            let chosen = (0..self.targets.len())
                .filter(eligible)
                .filter(|&i| self.seen[i].resting_until <= now)
                .min_by(|&a, &b| self.back_at(a).total_cmp(&self.back_at(b)));
            if let Some(i) = chosen {
                self.seen[i].probed |= self.is_ejected(i, now);
            }
            return chosen;
        }
        let load = |i: usize| self.load(i);
        let spare = |i: usize| f64::from(self.seen[i].outstanding) < self.targets[i].capacity;
        let by = |key: &dyn Fn(usize) -> f64, pool: &[usize]| {
            pool.iter()
                .copied()
                .min_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)))
        };
        let chosen = match self.policy {
            Policy::RoundRobin => {
                let n = self.targets.len();
                // Each class takes its own turns, so that one whose targets only some
                // targets meet does not skew another's; past `MAX_CURSORS` classes (any a
                // client may write), a new one takes the turns of requests of no class.
                let cursor = |next: &[(Option<String>, usize)], class: Option<&str>| {
                    next.iter().position(|(c, _)| c.as_deref() == class)
                };
                let class =
                    if cursor(&self.next, ask.class).is_some() || self.next.len() < MAX_CURSORS {
                        ask.class
                    } else {
                        None
                    };
                let c = cursor(&self.next, class).unwrap_or_else(|| {
                    self.next.push((class.map(str::to_string), 0));
                    self.next.len() - 1
                });
                let start = self.next[c].1;
                let pick = (0..n).map(|k| (start + k) % n).find(|i| pool.contains(i));
                // A request's first try takes the turn; a retry of one (targets excluded)
                // goes to the next target without taking another, so that the request after
                // it still starts on the target after the first one it tried: were retries to
                // take turns, every request would start on a failing target that sits just
                // before a healthy one.
                if let (Some(i), true) = (pick, ask.exclude.is_empty()) {
                    self.next[c].1 = (i + 1) % n;
                }
                pick
            }
            Policy::LeastOutstanding => by(&load, &pool),
            Policy::Latency => {
                let cost = |i: usize| expected[i].0 + n * expected[i].1;
                by(&cost, &pool)
            }
            Policy::Weighted => {
                let total: f64 = pool.iter().map(|&i| self.targets[i].weight.max(0.0)).sum();
                let mut x = self.uniform() * total;
                let mut pick = pool.last().copied();
                for &i in &pool {
                    x -= self.targets[i].weight.max(0.0);
                    if x < 0.0 {
                        pick = Some(i);
                        break;
                    }
                }
                pick
            }
            Policy::Cost | Policy::Priority => {
                // The request's own cost: its output at the output's price, its prompt (where
                // known) at the prompt's.
                let prompt = f64::from(ask.prompt_tokens.unwrap_or(0));
                let rank = |i: usize| match self.policy {
                    Policy::Cost => {
                        let t = &self.targets[i];
                        t.usd_per_mtok * n + t.input_usd_per_mtok * prompt
                    }
                    _ => f64::from(self.targets[i].priority),
                };
                let open: Vec<usize> = pool.iter().copied().filter(|&i| spare(i)).collect();
                if open.is_empty() {
                    by(&load, &pool)
                } else {
                    by(&rank, &open)
                }
            }
        };
        chosen
    }

    /// Expected seconds until the last of `n` output tokens of a request of `prompt_tokens`
    /// (where known) on target `i` at `now`: time to first token ([`Router::expected_ttft`])
    /// plus output time (observed, else predicted), stretched by the target's load
    /// (`tpot_stretch`). Growing smoothly with load spreads requests over targets
    /// of similar speed instead of herding onto the single fastest one.
    pub fn expected_latency(&self, i: usize, n: f64, now: f64, prompt_tokens: Option<u32>) -> f64 {
        let (ttft, tpot, _) = self.expect(i, now, prompt_tokens, n);
        ttft + n * tpot
    }

    /// Expected time per output token on target `i` for a request sent at `now`: observed
    /// (else predicted), stretched by its load (`tpot_stretch`).
    pub fn expected_tpot(&self, i: usize, now: f64) -> f64 {
        self.expect(i, now, None, 0.0).1
    }

    /// [`Router::expected_ttft`] and [`Router::expected_tpot`] together, from one reading
    /// of what was learned, with the spread of the time per token
    /// ([`Observed::tpot_dev_s`], stretched as the time is). Past capacity a request waits
    /// for a place: each capacity's worth of requests ahead of it is one more life of `n`
    /// tokens at a full batch's time per token, which its time per token then is. A first token comes after that wait:
    /// counted only in the time to the last token, a wafer pool that holds few requests
    /// (whose tokens a full batch barely slows) kept its first tokens expected within a 1 s
    /// target while they waited seconds for a place, and took nearly every request beside
    /// idle GPUs.
    fn expect(&self, i: usize, now: f64, prompt_tokens: Option<u32>, n: f64) -> (f64, f64, f64) {
        let ((ttft, tpot), (kept_ttft, kept_tpot)) = self.aged(i, now);
        let load = self.load(i);
        let stretch = self.tpot_stretch(i, load);
        let tpot = tpot * stretch;
        let place_wait = (load - 1.0).max(0.0) * n * tpot;
        (
            self.for_prompt(i, ttft, kept_ttft, prompt_tokens) * self.ttft_stretch(i, load)
                + self.queued_s(i, now)
                + place_wait,
            tpot,
            kept_tpot * self.seen[i].tpot_dev_s * stretch,
        )
    }

    /// How many times its idle time to first token target `i` takes at `load` (requests in
    /// flight over its capacity): a prompt's chunks share the steps with the requests
    /// decoding, so one more for each capacity's worth; a disaggregated target's prompts run
    /// apart from them ([`Target::disaggregated`]).
    fn ttft_stretch(&self, i: usize, load: f64) -> f64 {
        if self.targets[i].disaggregated {
            1.0
        } else {
            1.0 + load
        }
    }

    /// How many times its idle time per token target `i` takes at `load` (requests in
    /// flight over its capacity). A decode step grows about linearly with its batch, each
    /// sequence adding its KV cache's reads and its share of the arithmetic to the weights'
    /// fixed stream, so from one at idle to the target's full-over-idle ratio
    /// ([`Target::tpot_full_s`]) at capacity, and no further: past capacity the requests
    /// wait for a place (`expect`) rather than batch.
    fn tpot_stretch(&self, i: usize, load: f64) -> f64 {
        let t = &self.targets[i];
        let full = if t.tpot_full_s > 0.0 && t.tpot_s > 0.0 {
            (t.tpot_full_s / t.tpot_s).max(1.0)
        } else {
            2.0
        };
        1.0 + load.clamp(0.0, 1.0) * (full - 1.0)
    }

    /// Requests in flight on target `i` over its capacity.
    fn load(&self, i: usize) -> f64 {
        f64::from(self.seen[i].outstanding) / self.targets[i].capacity.max(1e-9)
    }

    /// The load an answer from target `i` was made under: the other requests in flight
    /// beside it, as the expectation it is compared with counted those before it was sent.
    fn load_beside(&self, i: usize) -> f64 {
        f64::from(self.seen[i].outstanding.saturating_sub(1)) / self.targets[i].capacity.max(1e-9)
    }

    /// What the router expects of target `i` idle at `now`, time to first token and time per
    /// output token: what it learned, faded towards the prediction as it ages, else the
    /// prediction; with the shares of what was learned of each that still count at `now`:
    /// half for every [`LEARNED_HALF_LIFE_S`] since each was last observed.
    fn aged(&self, i: usize, now: f64) -> ((f64, f64), (f64, f64)) {
        let (t, s) = (&self.targets[i], &self.seen[i]);
        let kept = |at: f64| 0.5_f64.powf((now - at).max(0.0) / LEARNED_HALF_LIFE_S);
        let (kept_ttft, kept_tpot) = (kept(s.seen_at.0), kept(s.seen_at.1));
        // Back towards the prediction, or the best seen where that is better: a target that
        // states no prediction is taken for a typical cloud's, which one seen faster than
        // that, and then slow for a while, would never be tried again beside another that
        // beats the typical.
        let fade = |seen: Option<f64>, best: Option<f64>, predicted: f64, kept: f64| {
            let home = best.map_or(predicted, |b| b.min(predicted));
            seen.map_or(predicted, |x| home + kept * (x - home))
        };
        (
            (
                fade(s.ttft_s, s.best.0, t.ttft_s, kept_ttft),
                fade(s.tpot_s, s.best.1, t.tpot_s, kept_tpot),
            ),
            (kept_ttft, kept_tpot),
        )
    }

    /// Expected time to first token on target `i` for a request of `prompt_tokens` (where
    /// known) and `n` output tokens sent at `now`: observed (else predicted), taken to the
    /// prompt's length ([`Target::ttft_prompt_tokens`]), stretched by its load, behind the
    /// prompts queued ahead of it where the target's prefill rate is known, and after the
    /// wait for a place past its capacity (`expect`, requests ahead taken to
    /// be of the same length).
    /// Counted in requests alone, a queue of long prompts looks short on a target whose KV
    /// cache holds many: sent a trace of 10,000-token prompts, a fast pool drew nearly every
    /// request while its first tokens waited seconds and a slower pool beside it idled.
    pub fn expected_ttft(&self, i: usize, now: f64, prompt_tokens: Option<u32>, n: f64) -> f64 {
        self.expect(i, now, prompt_tokens, n).0
    }

    /// How many times longer a first token of `prompt_tokens` takes on target `i` than one
    /// of the prompt its TTFT is for (see [`Target::ttft_prompt_tokens`]); one where either
    /// length is unknown.
    fn prompt_scale(&self, i: usize, prompt_tokens: Option<u32>) -> f64 {
        let at = self.targets[i].ttft_prompt_tokens;
        match prompt_tokens {
            Some(n) if at > 0.0 => (f64::from(n) / at).max(1.0),
            _ => 1.0,
        }
    }

    /// Idle seconds to a first token of `prompt_tokens` (where known) on target `i`, whose
    /// TTFT is `ttft` (learned, `kept` of it still counting, else predicted): scaled from the
    /// prompt it is for where the target says ([`Router::prompt_scale`]); else along the
    /// line its answers drew ([`PromptFit`]), the slope fading as what was learned does.
    fn for_prompt(&self, i: usize, ttft: f64, kept: f64, prompt_tokens: Option<u32>) -> f64 {
        let fit = &self.seen[i].prompt;
        match (prompt_tokens, fit.slope()) {
            (Some(n), Some(slope)) if self.targets[i].ttft_prompt_tokens <= 0.0 => {
                let along = ttft + kept * slope * (f64::from(n) - fit.mean_x);
                along.max(SHORTEST_TTFT_SHARE * ttft)
            }
            _ => ttft * self.prompt_scale(i, prompt_tokens),
        }
    }

    /// Seconds the prompts queued on target `i` at `now` take to drain, where its prefill
    /// rate is known (else none).
    fn queued_s(&self, i: usize, now: f64) -> f64 {
        let rate = self.targets[i].prefill_tok_s;
        if rate > 0.0 {
            self.backlog(i, now) / rate
        } else {
            0.0
        }
    }

    /// Prompt tokens queued on target `i` at `now`: what was sent, drained at its prefill
    /// rate since.
    fn backlog(&self, i: usize, now: f64) -> f64 {
        let s = &self.seen[i];
        let drained = (now - s.backlog_at).max(0.0) * self.targets[i].prefill_tok_s;
        (s.backlog - drained).max(0.0)
    }

    /// A request of `prompt_tokens` went to target `i` at `now`: as
    /// [`Router::dispatched`], and its prompt joins the target's queue. Returns what the
    /// router expected of the target as it sent it, which its first token's time is to be
    /// told with ([`Router::first_token`]).
    pub fn dispatched_prompt(&mut self, i: usize, now: f64, prompt_tokens: u32) -> Sent {
        let sent = Sent {
            queued_s: self.queued_s(i, now),
            load: self.load(i),
            prompt_tokens,
        };
        let queued = self.backlog(i, now) + f64::from(prompt_tokens);
        let s = &mut self.seen[i];
        s.backlog = queued;
        s.backlog_at = now;
        self.dispatched(i);
        sent
    }

    /// A request went to target `i`.
    pub fn dispatched(&mut self, i: usize) {
        let s = &mut self.seen[i];
        s.outstanding += 1;
        s.requests += 1;
    }

    /// Target `i` produced, at `now`, a first token `ttft_s` after its request was `sent`
    /// ([`Router::dispatched_prompt`]; `Sent::default()` where it kept no count).
    ///
    /// The router learns what the target takes idle: an expectation takes it to the prompt's
    /// length, stretches it by the load as the request is sent and adds the prompts queued
    /// ([`Router::expected_ttft`]),
    /// so an observation is taken back by the same. A request sent to a target already at
    /// its capacity waited for a place, which the expectation prices in its time per token
    /// ([`Router::expected_latency`]): its first token teaches nothing of the target's.
    /// Learned as measured, a burst's slow answers would stay in the average after the
    /// burst and be stretched again by any later load; the latency policy then kept sending
    /// every request to a pool twelve times slower, the fast one idle and never asked
    /// again, so never seen to be fast.
    pub fn first_token(&mut self, i: usize, now: f64, ttft_s: f64, sent: Sent) {
        if sent.load >= 1.0 {
            return;
        }
        // An answer quicker than the queue expected ahead of it says the queue was short, not
        // that the target takes no time.
        let own = (ttft_s - sent.queued_s).max(0.05 * ttft_s);
        let idle =
            own / self.ttft_stretch(i, sent.load) / self.prompt_scale(i, Some(sent.prompt_tokens));
        let (_, (kept, _)) = self.aged(i, now);
        let learns_slope = self.targets[i].ttft_prompt_tokens <= 0.0;
        let s = &mut self.seen[i];
        // Where no prediction says how first tokens grow with their prompts, their answers
        // draw the line; the average then stays that of the prompts seen, the line's centre.
        if learns_slope && sent.prompt_tokens > 0 {
            s.prompt.learn(f64::from(sent.prompt_tokens), idle, kept);
        }
        let x = ewma(s.ttft_s, idle, kept);
        s.ttft_s = Some(x);
        s.best.0 = Some(s.best.0.map_or(x, |b| b.min(x)));
        s.seen_at.0 = now;
    }

    /// A request on target `i` ended well at `now`; `tpot_s` is its time per output token,
    /// when it produced more than one (taken back to an idle target's as in
    /// [`Router::first_token`]). An ejected target sent a request since it was ejected (panic
    /// routing) is back in service: a readiness probe reading the gateway's `/health` saw a
    /// model down for the rest of its cool-down while it answered every request.
    pub fn succeeded(&mut self, i: usize, now: f64, tpot_s: Option<f64>) {
        let stretch = self.tpot_stretch(i, self.load_beside(i));
        let (_, (_, kept)) = self.aged(i, now);
        let s = &mut self.seen[i];
        s.outstanding = s.outstanding.saturating_sub(1);
        s.consecutive_failures = 0;
        // A target that answers a request sent while it was ejected is back; without a
        // request sent since, an answer is one sent before its failures and proves less.
        if s.probed && s.ejected_until > now {
            s.ejected_until = now;
            s.probed = false;
        }
        if let Some(t) = tpot_s {
            s.learn_tpot(t / stretch, kept, now);
        }
    }

    /// A request on target `i` ended well at `now` with a whole (not streamed) answer of
    /// `tokens` output tokens after `seconds`, having been `sent` as
    /// [`Router::dispatched_prompt`] said. It says nothing of when the first token was
    /// ready: the time past the expected first token (for its prompt's length, behind the
    /// prompts queued ahead of it), over the tokens after it, is the time per token it
    /// shows. An answer of fewer than two tokens (or of unknown length) teaches nothing.
    /// Taken past a first token expected for a typical prompt, a long prompt's prefill was
    /// charged to its few tokens: after one 131,000-token prompt answered in 0.7 s with 7
    /// tokens, a target looked ten times slower a token and the next such request went to
    /// one 20 times slower.
    pub fn answered(&mut self, i: usize, now: f64, seconds: f64, tokens: u64, sent: Sent) {
        // The load it ran under, as in `succeeded`; a first token's stretch is the load's own
        // (see `expected_ttft`).
        let beside = self.load_beside(i);
        let stretch = self.tpot_stretch(i, beside);
        let ((ttft, tpot), (kept_ttft, kept)) = self.aged(i, now);
        let first = sent.queued_s
            + self.for_prompt(i, ttft, kept_ttft, Some(sent.prompt_tokens))
                * self.ttft_stretch(i, beside);
        self.succeeded(i, now, None);
        // One token has no time after the first to learn from.
        if tokens < 2 || !seconds.is_finite() {
            return;
        }
        // An answer quicker than its expected first token says the tokens were quick, not
        // free: no less than a twentieth of the expected time per token.
        let per_token = ((seconds - first) / (tokens - 1) as f64 / stretch).max(0.05 * tpot);
        self.seen[i].learn_tpot(per_token, kept, now);
    }

    /// A request on target `i` failed at `now` (connect error, 429, 5xx, timeout). Returns
    /// whether this failure ejected the target.
    pub fn failed(&mut self, i: usize, now: f64) -> bool {
        let health = self.health;
        let s = &mut self.seen[i];
        s.outstanding = s.outstanding.saturating_sub(1);
        s.failures += 1;
        // Failures while ejected (requests already in flight, panic routing) do not count
        // towards the next ejection: a target back from its cool-down gets a fresh run. But
        // a request panic routing sent it that fails starts its cool-down again, so the next
        // goes to another ejected target: kept at the one whose cool-down ended first, every
        // request of a model whose deployments were all ejected went to one that still
        // failed, while another had recovered.
        if s.ejected_until > now {
            if s.probed {
                s.ejected_until = now + health.cooldown_s;
                s.probed = false;
            }
            return false;
        }
        s.consecutive_failures += 1;
        if s.consecutive_failures >= health.eject_after && s.ejected_until <= now {
            s.ejected_until = now + health.cooldown_s;
            s.probed = false;
            s.ejections += 1;
            s.consecutive_failures = 0;
            return true;
        }
        false
    }

    /// Target `i` asked to be left alone for `seconds` (an HTTP 429's `Retry-After`): it is
    /// passed over as an ejected one is until then, at most the health's cool-down, without
    /// counting as an ejection.
    pub fn rest(&mut self, i: usize, now: f64, seconds: f64) {
        let until = now + seconds.clamp(0.0, self.health.cooldown_s);
        let s = &mut self.seen[i];
        s.resting_until = s.resting_until.max(until);
    }

    /// A request on target `i` ended without a verdict on the target (the client left).
    pub fn abandoned(&mut self, i: usize) {
        let s = &mut self.seen[i];
        s.outstanding = s.outstanding.saturating_sub(1);
    }

    /// A uniform draw in [0, 1) for the weighted policy.
    fn uniform(&mut self) -> f64 {
        unit(splitmix64(&mut self.rng))
    }
}

/// The next value of a SplitMix64 stream (Steele, Lea and Flood, OOPSLA 2014). Routing,
/// simulated workloads and injected faults need only fast repeatable draws, not
/// cryptographic ones; this is the one generator step they share.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 random bits as a uniform draw in [0, 1): the top 53 bits fill a double's mantissa.
pub fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The moving average `old` (as learned) with observation `x`, where `kept` of what was
/// learned still counts: the old average's weight shrinks as it ages, so that an
/// observation after a long silence, the fresher evidence, counts for more than one among
/// many. Observed again at once, the newest weighs [`EWMA_ALPHA`]; a half-life later, over
/// half. The average moves from what was learned, not from its expectation faded towards
/// the prediction since: moved from that, a target answering every two seconds in 1,000 ms
/// settled at 929 ms (its prediction 500 ms), below every answer it gave, and requests
/// with a 950 ms target went to it.
fn ewma(old: Option<f64>, x: f64, kept: f64) -> f64 {
    match old {
        Some(o) => {
            let weight = (1.0 - EWMA_ALPHA) * kept.clamp(0.0, 1.0);
            weight * o + (1.0 - weight) * x
        }
        None => x,
    }
}
