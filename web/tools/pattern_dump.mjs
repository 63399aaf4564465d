// The page's pattern automaton as JSON, for the Python tests that compare it with
// toolkit.runtime.pattern: node tools/pattern_dump.mjs '{"chars": [...], "patterns": [...]}'
import { RegExpParser } from "@eslint-community/regexpp";
import { compileRegex } from "../src/pattern.js";

const { chars, patterns } = JSON.parse(process.argv[2]);
const out = patterns.map((source) => {
  const p = compileRegex(source, chars, new RegExpParser());
  return {
    table: Array.from(p.table),
    accepting: Array.from(p.accepting, Boolean),
    distance: Array.from(p.distance),
  };
});
process.stdout.write(JSON.stringify(out));
