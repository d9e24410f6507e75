#!/usr/bin/env bash
# Gateway overhead, side by side in one run: Switchyard, the LiteLLM proxy, the vLLM router
# and the SGLang router, each in front of the same zero-delay mock upstream on loopback.
#
# For each gateway and for plain and streamed chat completions it reports the latency added
# at concurrency 1 (p50 and p99 through the gateway minus straight to the mock, measured in
# the same run), the highest request rate whose p99 stays under 10 ms, and the highest rate
# at any latency, sweeping concurrency. The gateway under test runs on core 0; the mock and the load generator share
# core 1. Results: bench/results/gateway-<time>.jsonl and a table on standard output.
#
# Usage: bench/gateway.sh            (DUR=seconds per point, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-3}
CONCURRENCY=${CONCURRENCY:-"1 2 4 8 16 32 64 128"}

cargo build --release --quiet -p switchyard --bin switchyard
cargo build --release --quiet -p switchyard-gateway --example mock_upstream --example loadgen
BIN=target/release/switchyard
EX=target/release/examples

if ! bench/.venv/bin/python -c "import litellm" >/dev/null 2>&1; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet -r bench/requirements.txt
fi
V=bench/.venv/bin

mkdir -p bench/results
OUT=bench/results/gateway-$(date -u +%Y%m%dT%H%M%SZ).jsonl
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_up() { # port
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null -m 1 -X POST -H 'content-type: application/json' \
      -d '{"model":"mock","messages":[{"role":"user","content":"hi"}],"max_tokens":8}' \
      "http://127.0.0.1:$1/v1/chat/completions"; then return 0; fi
    sleep 0.5
  done
  echo "gateway on port $1 did not come up" >&2; return 1
}

taskset -c 1 "$EX/mock_upstream" 127.0.0.1:9100 >/dev/null & PIDS+=($!)

cat > "$WORK/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:9200"
[[provider]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:9100/v1"
[[model]]
name = "mock"
policy = "least-outstanding"
[[model.deployment]]
provider = "mock"
TOML
cat > "$WORK/litellm.yaml" <<YAML
model_list:
  - model_name: mock
    litellm_params:
      model: openai/mock
      api_base: http://127.0.0.1:9100/v1
      api_key: unused
YAML

start() { # name
  case $1 in
    switchyard) taskset -c 0 "$BIN" serve --config "$WORK/switchyard.toml" >/dev/null 2>&1 & PIDS+=($!); PORT=9200 ;;
    litellm) LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY=true \
      taskset -c 0 "$V/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port 9301 --num_workers 1 >/dev/null 2>&1 & PIDS+=($!); PORT=9301 ;;
    vllm-router) taskset -c 0 "$V/vllm-router" --host 127.0.0.1 --port 9302 --worker-urls http://127.0.0.1:9100 \
      --policy round_robin >/dev/null 2>&1 & PIDS+=($!); PORT=9302 ;;
    sglang-router) taskset -c 0 "$V/sglang-router" launch --backend openai --host 127.0.0.1 --port 9303 \
      --worker-urls http://127.0.0.1:9100 --policy round_robin --prometheus-port 29013 --log-level warn \
      >/dev/null 2>&1 & PIDS+=($!); PORT=9303 ;;
  esac
  wait_up "$PORT"
}

measure() { # name port
  for mode in plain stream; do
    for c in $CONCURRENCY; do
      line=$(taskset -c 1 "$EX/loadgen" "http://127.0.0.1:$2/v1/chat/completions" "$c" "$DUR" "$mode")
      echo "{\"gateway\":\"$1\",${line#\{}" | tee -a "$OUT"
    done
  done
}

measure direct 9100
for g in switchyard vllm-router sglang-router litellm; do
  start "$g"
  measure "$g" "$PORT"
  kill "${PIDS[-1]}" 2>/dev/null || true
  wait "${PIDS[-1]}" 2>/dev/null || true
done

python3 bench/summarize.py "$OUT"
