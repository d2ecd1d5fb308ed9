"""Checks Kafka messages against a contract written by outbox::contract::Contract::write,
with the jsonschema package (code nobody here wrote).

Usage: check_contract.py DIR, where DIR holds asyncapi.json and schemas/.

Input (stdin): a JSON list of messages, each {"topic": text, "headers": {name: text},
"key": text, "value": text or null (a tombstone)}, as a consumer read them from the
broker.

For each message, exactly one message of its topic's channel in the AsyncAPI document
must accept both its headers and its value, and the JSON Schema file of its event type
and version must accept its payload (for CloudEvents in structured mode, the value's
`data`). Formats (uuid, date-time) are checked.

Output (stdout): a JSON list, one {"topic", "message", "event_type", "event_version"}
per message, in order. On a mismatch: a message on stderr and exit status 1.
"""

import json
import re
import sys
from pathlib import Path

from jsonschema import Draft7Validator, Draft202012Validator

contract = Path(sys.argv[1])
document = json.loads((contract / "asyncapi.json").read_text())


def in_document(pointer):
    """A draft-07 validator of the schema at `pointer` in the AsyncAPI document, whose
    references (#/components/schemas/...) resolve against the document."""
    schema = dict(document)
    schema["$ref"] = pointer
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def file_of(event_type, event_version):
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{event_type}.{event_version}")
    return contract / "schemas" / f"{name}.json"


def fail(text):
    print(text, file=sys.stderr)
    sys.exit(1)


def check(message):
    topic = message["topic"]
    channel = document["channels"].get(topic)
    if channel is None:
        fail(f"no channel for topic {topic}")
    value = None if message["value"] is None else json.loads(message["value"])
    # A message of the channel describes this one when it accepts both its headers and
    # its value (in structured mode, the type is in the value).
    refusals = {}
    for message_id in channel["messages"]:
        pointer = f"#/channels/{topic}/messages/{message_id}"
        errors = [e.message for e in in_document(f"{pointer}/headers").iter_errors(message["headers"])]
        errors += [e.message for e in in_document(f"{pointer}/payload").iter_errors(value)]
        refusals[message_id] = errors
    matches = [message_id for message_id, errors in refusals.items() if not errors]
    if len(matches) != 1:
        fail(
            f"{len(matches)} messages of {topic} accept the message with headers "
            f"{message['headers']} and value {value}: {matches}; refusals: {refusals}"
        )
    message_id = matches[0]
    described = channel["messages"][message_id]
    outbox = described["x-outbox"]
    data = value["data"] if outbox["format"] == "cloudevents-structured" else value
    schema = json.loads(file_of(outbox["eventType"], outbox["eventVersion"]).read_text())
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [error.message for error in validator.iter_errors(data)]
    if errors:
        fail(f"{topic} {message_id}: {data} does not fit its JSON Schema: {errors}")
    return {
        "topic": topic,
        "message": message_id,
        "event_type": outbox["eventType"],
        "event_version": outbox["eventVersion"],
    }


json.dump([check(message) for message in json.load(sys.stdin)], sys.stdout)
