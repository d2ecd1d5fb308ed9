// Parses an AsyncAPI document with the AsyncAPI Initiative's own parser (which checks
// it against the specification's JSON Schema and its rules) and fails on any error.
// Usage: node validate.mjs FILE. Prints the warnings, one a line, to stderr.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const file = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"), {
  source: file,
});
const line = (d) => `${d.path.join("/") || "(root)"}: ${d.message} [${d.code}]`;
for (const warning of diagnostics.filter((d) => d.severity !== 0)) {
  console.error(`warning: ${line(warning)}`);
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (errors.length > 0 || document === undefined) {
  for (const error of errors) console.error(`error: ${line(error)}`);
  process.exit(1);
}
const channels = document.channels().all().map((c) => c.address());
const messages = document.allMessages().all().length;
console.log(JSON.stringify({ version: document.version(), channels, messages }));
