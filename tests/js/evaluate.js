#!/usr/bin/env node
// Evaluate FHIRPath expressions the way a form renderer would, for the Python cross-check.
//
// stdin:  {"questionnaire": {...}, "response": {...}, "expressions": {"name": "fhirpath", ...}}
//         or a JSON array of such cases (one node start for many responses)
// stdout: {"name": [result, ...], ...}   (each result is the evaluated collection),
//         or an array of those, in the order of the cases
// %questionnaire is the Questionnaire (weight()/ordinal() read answerOption ordinalValue from
// it) and %resource the QuestionnaireResponse, as an SDC form filler evaluates
// calculatedExpression. On any error: a message on stderr and exit status 1.
"use strict";

const fhirpath = require("fhirpath");
const r4 = require("fhirpath/fhir-context/r4");

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

function evaluateCase(input, index) {
  const { questionnaire, response, expressions } = input || {};
  if (!questionnaire || !response || !expressions) {
    throw new Error(`case ${index}: input needs questionnaire, response and expressions`);
  }
  const out = {};
  for (const name of Object.keys(expressions).sort()) {
    try {
      const env = { questionnaire, resource: response };
      const result = fhirpath.evaluate(response, expressions[name], env, r4);
      out[name] = fhirpath.resolveInternalTypes(result);
    } catch (err) {
      throw new Error(`case ${index}, ${name}: ${err.message}`);
    }
  }
  return out;
}

async function main() {
  const input = JSON.parse(await readStdin());
  const out = Array.isArray(input) ? input.map(evaluateCase) : evaluateCase(input, 0);
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stderr.write(`evaluate.js: ${err.message}\n`);
  process.exit(1);
});
