//! The catalog: systems (chips and how they are packaged), models (architecture shapes),
//! numeric precisions and benchmark workloads (dataset lengths and latency limits), as data.
//!
//! The built-in catalog is compiled from the TOML files under `data/`, where every figure
//! carries the URL it was taken from. A user extends or overrides it with a TOML file in the
//! same shape ([`Catalog::extend_from_toml`]); an entry whose `id` already exists replaces the
//! built-in one. This crate does no IO: callers hand it text.

mod model;
mod precision;
mod system;
mod workload;

pub use model::{AttentionKind, Model};
pub use precision::{Precision, UnknownPrecision};
pub use system::{DenseTflops, Measured, Price, System, SystemKind, WaferMesh};
pub use workload::{Workload, OSL_CV_RANGE};

use serde::Deserialize;

/// Errors from reading catalog data or looking an entry up.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The TOML text did not parse or a field had the wrong type; the message names the line,
    /// column and field, as the `toml` parser reports them.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// An entry parsed but its values cannot describe a real system or model.
    #[error("{origin}: entry `{id}`: {message}")]
    Invalid {
        origin: String,
        id: String,
        message: String,
    },
    /// No system with this id.
    #[error("unknown hardware `{id}`; known: {known}")]
    UnknownSystem { id: String, known: String },
    /// A system named with a memory size the catalog's entry does not have.
    #[error("unknown hardware `{id}`: the catalog's `{system}` has {has} GB, not {named} GB")]
    OtherMemory {
        id: String,
        system: String,
        has: f64,
        named: f64,
    },
    /// No model with this id.
    #[error("unknown model `{id}`; known: {known}")]
    UnknownModel { id: String, known: String },
    /// No workload with this id.
    #[error("unknown workload `{id}`; known: {known}")]
    UnknownWorkload { id: String, known: String },
}

/// The whole catalog: every system, model and workload known, in file order.
#[derive(Debug, Clone)]
pub struct Catalog {
    systems: Vec<System>,
    models: Vec<Model>,
    workloads: Vec<Workload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    system: Vec<System>,
    #[serde(default)]
    model: Vec<Model>,
    #[serde(default)]
    workload: Vec<Workload>,
}

const BUILTIN_SYSTEMS: &str = include_str!("../data/systems.toml");
const BUILTIN_MODELS: &str = include_str!("../data/models.toml");
const BUILTIN_WORKLOADS: &str = include_str!("../data/workloads.toml");

impl Catalog {
    /// The catalog compiled into the binary.
    ///
    /// # Errors
    /// Only if the compiled-in data is malformed, which the crate's tests rule out.
    pub fn builtin() -> Result<Self, CatalogError> {
        let mut catalog = Catalog {
            systems: Vec::new(),
            models: Vec::new(),
            workloads: Vec::new(),
        };
        catalog.extend_from_toml(BUILTIN_SYSTEMS, "built-in systems.toml")?;
        catalog.extend_from_toml(BUILTIN_MODELS, "built-in models.toml")?;
        catalog.extend_from_toml(BUILTIN_WORKLOADS, "built-in workloads.toml")?;
        Ok(catalog)
    }

    /// Adds the `[[system]]`, `[[model]]` and `[[workload]]` entries of `text` (named `origin` in errors).
    /// An entry with an id already present replaces it.
    ///
    /// # Errors
    /// A parse error names the line and field; a semantic error names the entry and field.
    pub fn extend_from_toml(&mut self, text: &str, origin: &str) -> Result<(), CatalogError> {
        // Entries are applied to a copy, which replaces the catalog only when the whole file
        // is good: a file refused halfway leaves nothing of itself behind.
        let mut next = self.clone();
        next.apply(text, origin)?;
        *self = next;
        Ok(())
    }

    fn apply(&mut self, text: &str, origin: &str) -> Result<(), CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Parse {
            origin: origin.to_string(),
            message: toml_error_line(text, &e),
        })?;
        // The line of the field at fault where the message names one, else of the entry's
        // id; a second entry of one id is named by the second's line (`last`).
        let at = |kind: &str, id: &str, message: String, last: bool| {
            let lines = entry_lines(text, kind, id, named_field(&message));
            CatalogError::Invalid {
                origin: match if last { lines.last() } else { lines.first() } {
                    Some(line) => format!("{origin}: line {line}"),
                    None => origin.to_string(),
                },
                id: id.to_string(),
                message,
            }
        };
        let invalid = |kind: &str, id: &str, message: String| at(kind, id, message, false);
        let system_ids: Vec<String> = file.system.iter().map(|s| s.id.clone()).collect();
        let model_ids: Vec<String> = file.model.iter().map(|m| m.id.clone()).collect();
        let workload_ids: Vec<String> = file.workload.iter().map(|w| w.id.clone()).collect();
        for (kind, ids) in [
            ("system", &system_ids),
            ("model", &model_ids),
            ("workload", &workload_ids),
        ] {
            let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|p| p[0] == p[1]) {
                return Err(at(
                    kind,
                    pair[0],
                    format!("a second `[[{kind}]]` entry with this id in the same file"),
                    true,
                ));
            }
        }
        for s in file.system {
            s.check().map_err(|m| invalid("system", &s.id, m))?;
            upsert(&mut self.systems, s, |x| x.id.as_str());
        }
        name_clash(&self.systems, &system_ids, |x| (&x.id, &x.aliases))
            .and_then(|()| {
                published_clash(&self.systems, &system_ids, false, |x| (&x.id, &x.aliases))
            })
            .map_err(|(id, m)| invalid("system", &id, m))?;
        lend_matrix_shares(&mut self.systems, &system_ids)
            .map_err(|(id, m)| invalid("system", &id, m))?;
        for m in file.model {
            m.check().map_err(|e| invalid("model", &m.id, e))?;
            upsert(&mut self.models, m, |x| x.id.as_str());
        }
        name_clash(&self.models, &model_ids, |x| (&x.id, &x.aliases))
            .and_then(|()| published_clash(&self.models, &model_ids, true, |x| (&x.id, &x.aliases)))
            .map_err(|(id, m)| invalid("model", &id, m))?;
        for w in file.workload {
            w.check().map_err(|e| invalid("workload", &w.id, e))?;
            if !self.models.iter().any(|m| m.id == w.model) {
                return Err(invalid(
                    "workload",
                    &w.id,
                    format!("field `model`: unknown model `{}`", w.model),
                ));
            }
            upsert(&mut self.workloads, w, |x| x.id.as_str());
        }
        Ok(())
    }

    /// Keeps one basis of price on every system, so that all are costed alike: `rent` keeps
    /// the rental rates and drops purchase prices, otherwise the reverse. A system without a
    /// price of that basis is left without one, rather than costed on the other.
    pub fn price_on(&mut self, rent: bool) {
        for s in &mut self.systems {
            if let Some(p) = s.price.as_mut() {
                if rent {
                    p.capex_usd_per_system = None;
                } else {
                    p.rent_usd_per_chip_hour = None;
                }
            }
        }
    }

    /// All systems, in catalog order.
    pub fn systems(&self) -> &[System] {
        &self.systems
    }

    /// All models, in catalog order.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// All benchmark workloads, in catalog order.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workload of `suite` that runs `model`, if any: a suite benchmarks each model on one
    /// dataset. Where several match, the last added wins, so a user's file overrides the
    /// built-in entry even under a new id.
    pub fn suite_workload(&self, suite: &str, model: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .rfind(|w| w.suite == suite && w.model == model)
    }

    /// The workload with this id.
    ///
    /// # Errors
    /// [`CatalogError::UnknownWorkload`], listing the ids that exist.
    pub fn workload(&self, id: &str) -> Result<&Workload, CatalogError> {
        by_id(&self.workloads, id, |w| &w.id).map_err(|known| CatalogError::UnknownWorkload {
            id: id.to_string(),
            known,
        })
    }

    /// The system with this id or alias, written in any case (`H100` finds `h100-sxm`), or
    /// with a published name that reduces to one (`NVIDIA H100 SXM5 80GB HBM3`). A memory
    /// size in the name must be the entry's own, within a tenth: `A100 40GB` is refused, since
    /// the catalog's A100 has 80 GB.
    ///
    /// # Errors
    /// [`CatalogError::UnknownSystem`], listing the ids that exist.
    pub fn system(&self, id: &str) -> Result<&System, CatalogError> {
        let unknown = |known| CatalogError::UnknownSystem {
            id: id.to_string(),
            known,
        };
        // A memory size in the name (`H100 SXM5 80GB`) must be the entry's own: `A100 40GB`
        // is not the 80 GB part the catalog holds.
        let (name, sizes) = memory_sizes(id);
        if let Ok(s) = by_name(&self.systems, id, |s| &s.id, |s| &s.aliases, false) {
            if sizes.is_empty() || named_exactly(s, id) {
                return Ok(s);
            }
        }
        let s = by_name(&self.systems, &name, |s| &s.id, |s| &s.aliases, false).map_err(unknown)?;
        let fits = |gb: f64| (gb - s.memory_gb).abs() <= 0.1 * s.memory_gb.max(gb);
        match sizes.iter().find(|gb| !fits(**gb)) {
            None => Ok(s),
            Some(gb) => Err(CatalogError::OtherMemory {
                id: id.to_string(),
                system: s.id.clone(),
                has: s.memory_gb,
                named: *gb,
            }),
        }
    }

    /// The model with this id or alias, or with a published name that reduces to one:
    /// `meta-llama/Meta-Llama-3.1-70B-Instruct` finds `llama-3.1-70b`.
    ///
    /// # Errors
    /// [`CatalogError::UnknownModel`], listing the ids that exist.
    pub fn model(&self, id: &str) -> Result<&Model, CatalogError> {
        by_name(&self.models, id, |m| &m.id, |m| &m.aliases, true).map_err(|known| {
            CatalogError::UnknownModel {
                id: id.to_string(),
                known,
            }
        })
    }
}

/// The field a check's message names first (`field \`memory_gb\` must ...`), if any.
fn named_field(message: &str) -> Option<&str> {
    let rest = &message[message.find("field `")? + "field `".len()..];
    rest.split('`').next()
}

/// The lines of `text` (from 1), one per `[[kind]]` entry with this id, where it sets
/// `field` (a dotted name by its table's key where an inline table sets it, else by its
/// last part, as a sub-table writes it), else where it sets its id. An entry whose id the
/// text writes in some other form is not found.
fn entry_lines(text: &str, kind: &str, id: &str, field: Option<&str>) -> Vec<usize> {
    // The byte range of each `[[kind]]` entry: from its header to the next one.
    let header = format!("[[{kind}]]");
    let mut blocks = Vec::new();
    let mut open: Option<usize> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with("[[") {
            if let Some(start) = open.take() {
                blocks.push(start..at);
            }
            if t.split('#').next().unwrap_or_default().trim() == header {
                open = Some(at + line.len());
            }
        }
        at += line.len();
    }
    blocks.extend(open.map(|start| start..text.len()));
    // The value a `key = value` line sets, without its quotes or a trailing comment.
    let value_at = |offset: usize| {
        let line = text[offset..].lines().next().unwrap_or_default();
        let v = line.split_once('=').map_or("", |(_, v)| v.trim());
        match v.chars().next() {
            Some(q @ ('"' | '\'')) => v[1..].split(q).next().unwrap_or_default(),
            _ => v.split('#').next().unwrap_or_default().trim(),
        }
    };
    blocks
        .into_iter()
        .filter_map(|block| {
            let id_at = key_offset(text, block.clone(), "id").filter(|&o| value_at(o) == id)?;
            let field_at = field.and_then(|f| {
                let table = f.split('.').next().unwrap_or(f);
                let last = f.rsplit('.').next().unwrap_or(f);
                key_offset(text, block.clone(), table).or_else(|| key_offset(text, block, last))
            });
            Some(line_at(text, field_at.unwrap_or(id_at)))
        })
        .collect()
}

/// Refuses a name (id or alias, as written in any case) that two entries of `items` answer
/// to, once a file's entries (`added`, by id) are in: such a name would name neither. The
/// entry blamed is the file's, the later one where both are; the error is its id and what
/// to change.
fn name_clash<T>(
    items: &[T],
    added: &[String],
    names: impl Fn(&T) -> (&String, &Vec<String>),
) -> Result<(), (String, String)> {
    // Each name as spelled, with the entry that answers to it and the field that gives it.
    let mut owners: std::collections::HashMap<String, (usize, &str)> =
        std::collections::HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let (id, aliases) = names(item);
        let own = std::iter::once((id, "id")).chain(aliases.iter().map(|a| (a, "aliases")));
        for (name, field) in own {
            match owners.get(&spelled(name)) {
                None => {
                    owners.insert(spelled(name), (i, field));
                }
                Some(&(j, _)) if j == i => {}
                Some(&(j, earlier_field)) => {
                    let other = names(&items[j]).0;
                    // Blame the file's entry; of two from the file, the later one.
                    let (blamed, owner, field) = if added.contains(id) {
                        (id, other, field)
                    } else {
                        (other, id, earlier_field)
                    };
                    let what = if field == "id" { "id" } else { "alias" };
                    return Err((
                        blamed.clone(),
                        format!("field `{field}`: `{name}` already names `{owner}`; choose another {what}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Refuses an alias of a file's entry (`added`, by id) that reads, as published names are
/// read, as another entry's name (`NVIDIA H200` on a new system, where the built-in `h200`
/// answers to it): spelled exactly, the alias would win and silently move that name, and the
/// rows and requests that use it, to the new entry.
fn published_clash<T>(
    items: &[T],
    added: &[String],
    model_names: bool,
    names: impl Fn(&T) -> (&String, &Vec<String>),
) -> Result<(), (String, String)> {
    for (i, item) in items.iter().enumerate() {
        let (id, aliases) = names(item);
        if !added.contains(id) {
            continue;
        }
        for alias in aliases {
            let want = normalized(alias, model_names);
            let other = items.iter().enumerate().find(|&(j, x)| {
                let (other_id, other_aliases) = names(x);
                j != i && answers_loosely(other_id, other_aliases, &want, model_names)
            });
            if let Some((_, x)) = other {
                return Err((
                    id.clone(),
                    format!(
                        "field `aliases`: `{alias}` reads as a name of `{}`; choose another alias",
                        names(x).0
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether an entry of this id and these aliases answers to a name whose comparison key
/// ([`normalized`]) is `want`.
fn answers_loosely(id: &str, aliases: &[String], want: &str, model_names: bool) -> bool {
    normalized(id, model_names) == want
        || aliases.iter().any(|a| normalized(a, model_names) == want)
}

/// The entry of `items` with this id, or the list of ids that exist.
fn by_id<'a, T>(items: &'a [T], id: &str, key: impl Fn(&T) -> &String) -> Result<&'a T, String> {
    items
        .iter()
        .find(|x| key(x) == id)
        .ok_or_else(|| join_ids(items.iter().map(|x| key(x).as_str())))
}

/// The entry of `items` that `name` names: its id, one of its aliases, or either written as
/// published names write it (any case, an organisation prefix, `_` for `-`, and for models
/// suffixes such as `-Instruct`, `-v0.1` or a `-0528` date), as in
/// `meta-llama/Meta-Llama-3.1-70B-Instruct`. A loose name that fits more than one entry fits
/// none. Otherwise the list of ids that exist.
fn by_name<'a, T>(
    items: &'a [T],
    name: &str,
    id: impl Fn(&T) -> &String,
    aliases: impl Fn(&T) -> &[String],
    model_names: bool,
) -> Result<&'a T, String> {
    if let Ok(x) = by_id(items, name, &id) {
        return Ok(x);
    }
    // The id or an alias in another case or spacing wins over any looser reading, so that a
    // user's entry named like a loose form of another (`a100-40gb`) is still found.
    let exact = spelled(name);
    let mut same = items
        .iter()
        .filter(|x| spelled(id(x)) == exact || aliases(x).iter().any(|a| spelled(a) == exact));
    if let (Some(x), None) = (same.next(), same.next()) {
        return Ok(x);
    }
    let want = normalized(name, model_names);
    let mut found = items
        .iter()
        .filter(|x| answers_loosely(id(x), aliases(x), &want, model_names));
    match (found.next(), found.next()) {
        (Some(x), None) => Ok(x),
        _ => Err(join_ids(items.iter().map(|x| id(x).as_str()))),
    }
}

/// A name as a comparison key: lower case, no organisation prefix, `-` for `_` and spaces.
/// For systems also without a maker's name, an SXM form or an HBM generation, and without
/// hyphens (memory sizes are checked apart, against the entry). For models also without a leading `meta-` and trailing `-instruct`, `-chat`,
/// `-hf`, `-it`, a serving tier (`-instant`, `-versatile`), a number format (`-fp8`) or
/// quantiser (`-AWQ-INT4`, `-GPTQ-Int8`), an
/// MLPerf accuracy target or suite (`llama2-70b-99.9`, `llama3.1-8b-edge`), a
/// release revision (`-v0.1`) or a four-digit date (`-0528`), and read as tokens (see
/// [`model_tokens`]); a bare `-v3` is part of the name.
fn normalized(name: &str, model_names: bool) -> String {
    let mut s = spelled(name.rsplit('/').next().unwrap_or(name));
    if !model_names {
        // Systems as published: a maker's name (`NVIDIA H200`, `AMD Instinct MI300X`,
        // `Cerebras CS-3`), a memory size or socket form (`H100 SXM5 80GB`) around the
        // chip's name, and hyphens placed as each writer likes (`CS-3`, `cs3`).
        // Clouds that name their instances after the system (`Azure-GB300-NVL72`) count as
        // makers here.
        const MAKERS: [&str; 11] = [
            "nvidia",
            "amd",
            "instinct",
            "cerebras",
            "sambanova",
            "groq",
            "intel",
            "azure",
            "aws",
            "gcp",
            "oci",
        ];
        let parts: Vec<&str> = s.split('-').filter(|t| !t.is_empty()).collect();
        let form = |t: &str| {
            matches!(
                t,
                "sxm"
                    | "sxm4"
                    | "sxm5"
                    | "sxm6"
                    | "oam"
                    | "hbm"
                    | "hbm2"
                    | "hbm2e"
                    | "hbm3"
                    | "hbm3e"
                    // The host's processors, as MLPerf's system names add them
                    // (`GB200-186GB_aarch64x72`).
                    | "aarch64"
                    | "arm64"
                    | "x86"
            )
        };
        let kept: Vec<&str> = parts
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                // A maker's name goes only where something else is left to name the chip.
                let maker = MAKERS.contains(t)
                    && parts.len() > 1
                    && (*i == 0 || parts[..*i].iter().all(|p| MAKERS.contains(p)));
                !(maker || form(t))
            })
            .map(|(_, t)| *t)
            .collect();
        return if kept.is_empty() { s } else { kept.concat() };
    }
    if let Some(rest) = s.strip_prefix("meta-") {
        s = rest.to_string();
    }
    loop {
        let before = s.len();
        for suffix in [
            "-instruct",
            "-chat",
            "-hf",
            "-it",
            "-instant",
            "-versatile",
            "-fp8",
            "-fp4",
            "-nvfp4",
            "-bf16",
            "-mxfp4",
            "-int8",
            "-int4",
            "-w8a8",
            "-w4a8",
            "-w4a16",
            "-w8a16",
            // A quantiser's name (`-AWQ-INT4`, `-GPTQ-Int8`).
            "-awq",
            "-gptq",
            // How a quantised checkpoint's scales were chosen (`-FP8-dynamic`).
            "-dynamic",
            // MLPerf's benchmark names: an accuracy target and the edge suite.
            "-99.9",
            "-99",
            "-edge",
        ] {
            if let Some(rest) = s.strip_suffix(suffix) {
                s = rest.to_string();
            }
        }
        if let Some((head, tail)) = s.rsplit_once('-') {
            // A release revision (`-v0.1`, `-v0.3`), not a generation (`DeepSeek-V3.1`).
            let dotted = tail.strip_prefix("v0.").is_some_and(|v| {
                !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.')
            });
            let date = tail.len() == 4 && tail.chars().all(|c| c.is_ascii_digit());
            if dotted || date {
                s = head.to_string();
            }
        }
        if s.len() == before {
            return model_tokens(&s);
        }
    }
}

/// A model name as its tokens joined by hyphens, a token ending where a hyphen stands or a
/// letter meets a digit: `llama3.1-8b` (Cerebras's id) and `llama-3.1-8b` both read
/// `llama-3.1-8b`, while `llama-38b` stays apart from `llama-3-8b`.
fn model_tokens(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev: Option<char> = None;
    for c in name.chars() {
        if c == '-' {
            if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        } else {
            if prev.is_some_and(|p| p.is_ascii_alphabetic()) && c.is_ascii_digit() {
                out.push('-');
            }
            out.push(c);
        }
        prev = Some(c);
    }
    out.trim_end_matches('-').to_string()
}

/// Whether `name` is the system's id or an alias in some case or spacing.
fn named_exactly(s: &System, name: &str) -> bool {
    let want = spelled(name);
    spelled(&s.id) == want || s.aliases.iter().any(|a| spelled(a) == want)
}

/// A name in lower case with `-` for `_` and spaces: how ids and aliases compare when written
/// in another case or spacing.
fn spelled(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace([' ', '_'], "-")
}

/// A system name without its memory sizes (`80GB`, `141 GB`), and those sizes in GB.
fn memory_sizes(name: &str) -> (String, Vec<f64>) {
    let lower = name.to_ascii_lowercase();
    let mut sizes = Vec::new();
    let mut kept = Vec::new();
    let tokens: Vec<&str> = lower
        .split([' ', '-', '_'])
        .filter(|t| !t.is_empty())
        .collect();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        let number = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|_| s.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        };
        if let Some(gb) = t.strip_suffix("gb").and_then(number) {
            sizes.push(gb);
        } else if tokens.get(i + 1) == Some(&"gb") && number(t).is_some() {
            sizes.extend(number(t));
            i += 1;
        } else {
            kept.push(t);
        }
        i += 1;
    }
    if sizes.is_empty() {
        (name.to_string(), sizes)
    } else {
        (kept.join("-"), sizes)
    }
}

/// Fills in every system's [`System::borrowed_matrix_share`] from the system its
/// `matrix_share_from` names (by id or alias), after each file, since a later file may
/// replace the lender. An entry of the file just read (`added`) must name another system
/// with a measured matrix share of its own, and have none itself. An earlier entry follows
/// its lender as a later file left it: to the lender's new measurement, through the lender
/// to the system it now borrows from, or, with nothing to follow, to no share at all. The
/// user replaced the lender, not the borrower, so none of these refuses the file.
fn lend_matrix_shares(systems: &mut [System], added: &[String]) -> Result<(), (String, String)> {
    let field = "field `matrix_share_from`";
    let find = |name: &str| systems.iter().find(|x| named_exactly(x, name));
    let shares: Vec<Option<f64>> = systems
        .iter()
        .map(|s| {
            let Some(from) = &s.matrix_share_from else {
                return Ok(None);
            };
            let lender = find(from);
            if !added.contains(&s.id) {
                // Lender after lender until one has a share of its own; no further than
                // there are systems, which a loop of names would exceed.
                return Ok(std::iter::successors(lender, |l| {
                    l.matrix_share_from.as_deref().and_then(find)
                })
                .take(systems.len())
                .find_map(System::own_matrix_share));
            }
            let refuse = |m: String| Err((s.id.clone(), format!("{field}: {m}")));
            match lender {
                None => refuse(format!("unknown system `{from}`")),
                Some(l) if l.id == s.id => refuse("a system cannot lend its share to itself".into()),
                Some(_) if s.own_matrix_share().is_some() => refuse(format!(
                    "`{}` has a measured matrix rate of its own, which the model uses; drop one of the two",
                    s.id
                )),
                Some(l) => match (l.own_matrix_share(), &l.matrix_share_from) {
                    (Some(share), _) => Ok(Some(share)),
                    (None, Some(further)) => refuse(format!(
                        "`{}` borrows its own share from `{further}`; name that system instead",
                        l.id
                    )),
                    (None, None) => refuse(format!(
                        "`{}` has no measured matrix rate of its own to lend (`[system.measured]` `gemm_tflops` at fp8, int8 or bf16; an fp4 rate is not a share)",
                        l.id
                    )),
                },
            }
        })
        .collect::<Result<_, _>>()?;
    for (s, share) in systems.iter_mut().zip(shares) {
        s.borrowed_matrix_share = share;
    }
    Ok(())
}

/// Replaces the entry with the same id, or appends: a user's entry overrides a built-in one.
fn upsert<T>(list: &mut Vec<T>, item: T, id: impl Fn(&T) -> &str) {
    match list.iter().position(|x| id(x) == id(&item)) {
        Some(i) => list[i] = item,
        None => list.push(item),
    }
}

/// The 1-based line of byte `offset` in `text` (clamped to its end): where a span kept by a
/// TOML reader starts, for error messages.
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The lines of a text at byte offsets given mostly in order, as a CSV reader's records come:
/// each offset's 1-based line, counted on from the last one asked, so that a file of many
/// rows is read in one pass, not one pass a row. The reader's own line count is not always
/// a record's line, and its offset may sit on the line ending before the record (a CRLF's
/// `\n`, the blank lines it skips), so an offset first moves past those.
#[derive(Debug, Clone)]
pub struct Lines<'t> {
    bytes: &'t [u8],
    /// The last offset counted to, and its line.
    at: usize,
    line: usize,
}

impl<'t> Lines<'t> {
    /// Lines of `text`, none counted yet.
    pub fn new(text: &'t str) -> Self {
        Lines {
            bytes: text.as_bytes(),
            at: 0,
            line: 1,
        }
    }

    /// The line of the record that starts at or after byte `offset`.
    pub fn of_byte(&mut self, offset: u64) -> usize {
        let b = self.bytes;
        let mut at = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
        while at < b.len() && matches!(b[at], b'\r' | b'\n') {
            at += 1;
        }
        if at < self.at {
            (self.at, self.line) = (0, 1);
        }
        self.line += b[self.at..at].iter().filter(|&&c| c == b'\n').count();
        self.at = at;
        self.line
    }
}

/// Checks a `sources` list: at least one entry, each a web address (`http://` or
/// `https://`), since every figure in the catalog must say where it comes from and a reader
/// must be able to follow it. `field` names the list in the error.
pub(crate) fn check_sources(field: &str, sources: &[String]) -> Result<(), String> {
    if sources.is_empty() {
        return Err(format!("field `{field}` must name at least one URL"));
    }
    match sources
        .iter()
        .find(|u| !(u.starts_with("https://") || u.starts_with("http://")) || u.contains(' '))
    {
        Some(u) => Err(format!(
            "field `{field}`: `{u}` is not a web address (http:// or https://, no spaces)"
        )),
        None => Ok(()),
    }
}

/// Byte offset of the first line in `text[span]` that sets `key` (`key = …`, the key bare or
/// quoted, on its own, after a dotted prefix such as `faults.key`, or inside an inline table
/// such as `faults = { key = … }`), for error messages about a value the TOML reader kept no
/// span for; `None` when no line there does.
pub fn key_offset(text: &str, span: std::ops::Range<usize>, key: &str) -> Option<usize> {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let keys = [key.to_string(), format!("\"{key}\""), format!("'{key}'")];
    // `key` at byte `i` of `line` is a key being set: nothing, `{`, `,` or `.` before it, `=`
    // after it, and neither inside a string nor past a comment's `#`.
    let sets = |line: &str, code: &[bool], i: usize, k: &str| {
        let before = line[..i].trim_end();
        code.get(i).copied().unwrap_or(false)
            && (before.is_empty() || before.ends_with(['{', ',', '.']))
            && line[i + k.len()..].trim_start().starts_with('=')
    };
    let mut at = start;
    for line in text[start..end].split_inclusive('\n') {
        let code = code_bytes(line);
        if keys.iter().any(|k| {
            line.match_indices(k.as_str())
                .any(|(i, _)| sets(line, &code, i, k))
        }) {
            return Some(at);
        }
        at += line.len();
    }
    None
}

/// For each byte of a TOML line, whether it is code: not inside a string and not in a
/// comment. A string's opening quote counts as code, so that a quoted key, which
/// [`key_offset`] looks for with its quotes, is found.
fn code_bytes(line: &str) -> Vec<bool> {
    let mut out = Vec::with_capacity(line.len());
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    let mut comment = false;
    for &b in line.as_bytes() {
        let opens = quote.is_none() && !comment && (b == b'"' || b == b'\'');
        if quote.is_none() && !comment && b == b'#' {
            comment = true;
        }
        out.push(!comment && (quote.is_none() || opens));
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if q == b'"' && b == b'\\' {
                    escaped = true;
                } else if b == q {
                    quote = None;
                }
            }
            None if opens => quote = Some(b),
            None => {}
        }
    }
    out
}

/// The byte range of the top-level table `[name]` in `text`, from its header to the next
/// header, for errors about a key of a table the TOML reader kept no span for.
pub fn table_span(text: &str, name: &str) -> Option<std::ops::Range<usize>> {
    let mut at = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        match (start, header_of(line)) {
            (None, Some(h)) if h == name => start = Some(at),
            (Some(s), Some(_)) => return Some(s..at),
            _ => {}
        }
        at += line.len();
    }
    start.map(|s| s..text.len())
}

/// The table a TOML line opens (`[name]`, `[[name]]`, spaces inside the brackets allowed),
/// or `None` for any other line: a line of a multi-line array starting with `[` holds a
/// comma, a quote or a number where a header holds a name.
fn header_of(line: &str) -> Option<String> {
    let code = line.split('#').next().unwrap_or("").trim();
    let inner = code
        .strip_prefix("[[")
        .and_then(|c| c.strip_suffix("]]"))
        .or_else(|| code.strip_prefix('[').and_then(|c| c.strip_suffix(']')))?;
    let name: String = inner
        .split('.')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(".");
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    (name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && name.chars().all(bare))
        .then_some(name)
}

/// Byte offset of the line that sets `field` (its last dotted part the key, else the
/// nearest part above it that `span` holds) within `span`, else the span's start. A span
/// that is empty or the whole text, for a field of a top-level table
/// (`router.max_attempts`), is narrowed to that table, so that a key of the same name
/// elsewhere is not taken for it.
pub fn field_offset(text: &str, span: std::ops::Range<usize>, field: &str) -> usize {
    let whole = span.is_empty() || (span.start == 0 && span.end >= text.len());
    let span = match field.split_once('.') {
        Some((table, _)) if whole => table_span(text, table).unwrap_or(0..text.len()),
        _ if span.is_empty() => 0..text.len(),
        _ => span,
    };
    // The key, else the nearest key above it that the span holds: a field missing from an
    // inline table (`arrival = { process = "gamma" }` without its `cv`) is at that table's
    // line, not at its section's header.
    field
        .rsplit('.')
        .find_map(|key| key_offset(text, span.clone(), key))
        .unwrap_or(span.start)
}

/// A TOML parse error as one line naming the line, column and field at fault, so that every
/// TOML reader in the workspace reports its errors the same way.
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let msg = plain_types(&e.message().trim().replace('\n', " "));
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = line_at(text, span.start);
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            match source.split_once('=') {
                Some((key, _)) => format!(
                    "line {line}, column {column}, field `{}`: {msg}",
                    key.trim()
                ),
                None => format!("line {line}, column {column} (`{source}`): {msg}"),
            }
        }
        None => msg,
    }
}

/// A deserializer's message with Rust's integer type names put in words: `expected u32`
/// says nothing to someone editing a TOML file.
fn plain_types(msg: &str) -> String {
    let mut out = msg.to_string();
    for (ty, words) in [
        // The type's bounds, not the field's: a field that refuses 0 says so once read, so
        // the words claim no lower bound that a later check contradicts.
        ("u8", "a whole number, not negative, up to 255"),
        ("u16", "a whole number, not negative, up to 65535"),
        ("u32", "a whole number, not negative, up to 4294967295"),
        // The most a TOML integer holds (a signed 64-bit one).
        (
            "u64",
            "a whole number, not negative, up to 9223372036854775807",
        ),
        ("usize", "a whole number, not negative"),
        ("f64", "a number"),
    ] {
        out = out.replace(&format!("expected {ty}"), &format!("expected {words}"));
    }
    out
}

fn join_ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    ids.collect::<Vec<_>>().join(", ")
}
