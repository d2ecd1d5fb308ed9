"""Reads Kafka messages with the CloudEvents Python SDK (its Kafka binding) and prints
each event's attributes and data as JSON.

Input (stdin): a JSON list of messages, each {"headers": {name: text}, "key": text or
null, "value": text or null (a tombstone)}, as a consumer read them from the broker. A message whose
content-type is application/cloudevents+json is read in structured mode, any other in
binary mode: as a CloudEvents consumer in any language decides.

Output (stdout): a JSON list, one {"mode", "attributes", "data"} per message, in order.
"""

import json
import sys

from cloudevents.core.bindings import kafka
from cloudevents.core.formats.json import JSONFormat


def read(message):
    headers = {name: text.encode() for name, text in message["headers"].items()}
    key = message["key"].encode() if message["key"] is not None else None
    value = message["value"].encode() if message["value"] is not None else None
    kafka_message = kafka.KafkaMessage(headers=headers, key=key, value=value)
    structured = headers.get("content-type", b"").startswith(b"application/cloudevents+json")
    if structured:
        event = kafka.from_structured(kafka_message, JSONFormat())
    else:
        event = kafka.from_binary(kafka_message, JSONFormat())
    attributes = {
        name: value.isoformat() if hasattr(value, "isoformat") else value
        for name, value in event.get_attributes().items()
    }
    for name, value in attributes.items():
        if isinstance(value, bytes):
            attributes[name] = value.decode()
    return {
        "mode": "structured" if structured else "binary",
        "attributes": attributes,
        "data": event.get_data(),
    }


json.dump([read(message) for message in json.load(sys.stdin)], sys.stdout)
