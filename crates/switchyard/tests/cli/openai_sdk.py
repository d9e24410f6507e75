"""The official OpenAI Python SDK against a running Switchyard gateway, unchanged.

Usage: python openai_sdk.py BASE_URL [keys]
With `keys`, the gateway holds one key `sk-team-a` for llama-3.1-8b at two requests a minute
(every request the key sends counts, refused or not), and the checks are those of client keys.
Exits non-zero, naming the check, at the first thing that does not hold.
"""

import sys

import openai

base_url = sys.argv[1]

if sys.argv[2:] == ["keys"]:
    ask = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    stranger = openai.OpenAI(base_url=base_url, api_key="sk-unknown", max_retries=0)
    try:
        stranger.chat.completions.create(**ask)
        raise AssertionError("an unknown key must fail")
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.code == "invalid_api_key", e
    team = openai.OpenAI(base_url=base_url, api_key="sk-team-a", max_retries=0)
    ids = [m.id for m in team.models.list()]
    assert ids == ["llama-3.1-8b"], f"models.list for the key: {ids}"
    try:
        team.chat.completions.create(**{**ask, "model": "llama-3.1-70b"})
        raise AssertionError("a model outside the key's list must fail")
    except openai.NotFoundError as e:
        assert e.status_code == 404, e
    answer = team.chat.completions.create(**ask)
    assert answer.choices[0].message.content
    # The SDK keeps the answer's x-request-id, as it does OpenAI's.
    assert (answer._request_id or "").startswith("req_"), answer._request_id
    try:
        team.chat.completions.create(**ask)
        raise AssertionError("a third request within the minute must be refused")
    except openai.RateLimitError as e:
        assert e.status_code == 429 and e.code == "rate_limit_exceeded", e
        assert int(e.response.headers["retry-after"]) >= 1, e.response.headers
    print("openai SDK key checks passed")
    sys.exit(0)

client = openai.OpenAI(base_url=base_url, api_key="unused-by-switchyard", max_retries=0)

# models.list
ids = sorted(m.id for m in client.models.list())
assert ids == ["llama-3.1-70b", "llama-3.1-8b"], f"models.list: {ids}"

# Chat completion, not streaming.
r = client.chat.completions.create(
    model="llama-3.1-8b",
    messages=[{"role": "user", "content": "Say hello."}],
    max_tokens=12,
)
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant", r
assert r.choices[0].message.content, r
assert r.choices[0].finish_reason == "length", r
assert r.usage.completion_tokens == 12, r.usage
assert r.usage.prompt_tokens > 0, r.usage

# A conversation's next turn finds its first in the engines' prefix cache, and the usage
# says how much of the prompt was served from it, as OpenAI's does.
history = [{"role": "system", "content": "Be brief. " * 400}, {"role": "user", "content": "Hi."}]
first = client.chat.completions.create(model="llama-3.1-8b", messages=history, max_tokens=2)
assert first.usage.prompt_tokens_details.cached_tokens == 0, first.usage
history += [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye."}]
second = client.chat.completions.create(model="llama-3.1-8b", messages=history, max_tokens=2)
cached = second.usage.prompt_tokens_details.cached_tokens
assert 900 < cached < second.usage.prompt_tokens, second.usage

# Chat completion, streaming, with the usage chunk.
chunks = list(
    client.chat.completions.create(
        model="llama-3.1-70b",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-switchyard-class": "interactive"},
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text, chunks
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8, chunks[-1]
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
assert finishes == ["length"], finishes

# Legacy completions, plain and streaming.
c = client.completions.create(model="llama-3.1-8b", prompt="Once upon a time", max_tokens=5)
assert c.object == "text_completion" and c.choices[0].text, c
assert c.usage.completion_tokens == 5, c.usage
parts = list(client.completions.create(model="llama-3.1-8b", prompt="x", max_tokens=4, stream=True))
assert "".join(p.choices[0].text for p in parts if p.choices), parts

# Typed errors.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("an unknown model must fail")
except openai.NotFoundError as e:
    assert e.status_code == 404 and "no-such-model" in str(e), e
try:
    client.chat.completions.create(model="llama-3.1-8b", messages=[], max_tokens=3)
    raise AssertionError("empty messages must fail")
except openai.BadRequestError as e:
    assert e.status_code == 400, e

print("openai SDK checks passed")
