#!/usr/bin/env python3
"""Write the seed corpora of the parser fuzz targets (tests/fuzz/seeds/<target>/) from the
real payloads of tests/fixtures/ and events/. Run from anywhere; the files are committed, so
this only needs running again when a fixture changes. README.md says where each comes from.

Each target reads its own framing (see the header of fuzz_targets/<target>.rs):
  slack_form       <timestamp>\\n<signature>\\n<raw form body>
  mattermost_form  <Authorization header>\\n<raw form body>
  webhook          <X-Gitlab-Event>\\n<raw JSON body>
  command          the slash command's text
"""

import base64
import hashlib
import hmac
import json
import pathlib
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
EVENTS = ROOT / "events"
SEEDS = ROOT / "tests" / "fuzz" / "seeds"


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def event(name):
    e = json.loads((EVENTS / name).read_text())
    body = e["body"]
    body = base64.b64decode(body) if e.get("isBase64Encoded") else body.encode()
    return e["headers"], body


def form_text(body):
    return dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)).get("text", "")


def main():
    # Slack: the signing example verifies as it is; Slack's documented slash command is
    # signed here with the same (documentation placeholder) secret and timestamp.
    sig = json.loads((FIXTURES / "slack" / "signature_example.json").read_text())
    secret, ts = sig["signing_secret"], sig["timestamp"]
    write("slack_form", "signature_example",
          f"{ts}\n{sig['expected_signature']}\n{sig['body']}")
    slash = (FIXTURES / "slack" / "slash_command.txt").read_bytes()
    mac = hmac.new(secret.encode(), f"v0:{ts}:".encode() + slash, hashlib.sha256)
    write("slack_form", "slash_command.signed",
          f"{ts}\nv0={mac.hexdigest()}\n".encode() + slash)
    for name in ["slack-command-run.json", "slack-ssl-check.json"]:
        headers, body = event(name)
        write("slack_form", "events-" + name.removesuffix(".json"),
              f"{headers['x-slack-request-timestamp']}\n{headers['x-slack-signature']}\n"
              .encode() + body)

    # Mattermost: the sample command, token by header and by form field; Slack's slash
    # command (no token at all).
    headers, body = event("mattermost-command-run.json")
    write("mattermost_form", "events-mattermost-command-run",
          f"{headers['authorization']}\n".encode() + body)
    write("mattermost_form", "events-mattermost-command-run.form-token", b"\n" + body)
    write("mattermost_form", "slack-slash_command.no-token", b"\n" + slash)

    # GitLab: the documented payloads (the published job example, with its comments, is
    # malformed JSON on purpose) and the sample hooks, each under its own event name; one
    # under an event we do not handle.
    hooks = FIXTURES / "gitlab-webhooks"
    write("webhook", "pipeline_event", b"Pipeline Hook\n" + (hooks / "pipeline_event.json").read_bytes())
    write("webhook", "job_event.clean", b"Job Hook\n" + (hooks / "job_event.clean.json").read_bytes())
    write("webhook", "job_event.published", b"Job Hook\n" + (hooks / "job_event.json").read_bytes())
    for name in ["gitlab-job-hook.json", "gitlab-pipeline-hook.json"]:
        headers, body = event(name)
        write("webhook", "events-" + name.removesuffix(".json"),
              f"{headers['x-gitlab-event']}\n".encode() + body)
    write("webhook", "push-hook.pipeline_event",
          b"Push Hook\n" + (hooks / "pipeline_event.json").read_bytes())

    # Command texts: those of the real payloads, the demo's script, and the hostile markup
    # the end-to-end test sends.
    texts = {
        "slack-slash_command": form_text(slash),
        "slack-signature_example": form_text(sig["body"].encode()),
        "events-slack-command-run": form_text(event("slack-command-run.json")[1]),
        "events-mattermost-command-run": form_text(event("mattermost-command-run.json")[1]),
        "demo-hello-world": "run hello-world",
        "demo-greet": "run greet the release notes",
        "demo-deploy-production": "run deploy-production",
        "help": "help",
        "e2e-hostile-input": "run echo-input <!channel> <@U123> &",
        "e2e-hostile-job": "run <!channel>",
        "markup-hostile": "<!channel> <@U123> & @here *bold* `tick` [x](https://evil)",
    }
    for name, text in texts.items():
        write("command", name, text)


if __name__ == "__main__":
    main()
