// Copies the LHC-Forms files the check-in page serves from the installed npm package into
// the Python package (src/alliance_fhir/web/checkin/static/lforms, gitignored): the page
// loads nothing from anywhere else. Run by `make web-assets`.
"use strict";
const fs = require("fs");
const path = require("path");

const pkg = path.join(__dirname, "node_modules", "lforms");
const dist = path.join(pkg, "dist", "lforms");
const out = path.join(__dirname, "..", "src", "alliance_fhir", "web", "checkin", "static", "lforms");

const files = {
  "webcomponent/assets/lib/zone.min.js": "zone.min.js",
  "webcomponent/lhc-forms.js": "lhc-forms.js",
  "webcomponent/styles.css": "styles.css",
  "webcomponent/down_arrow_gray_10_10.png": "down_arrow_gray_10_10.png",
  "webcomponent/magnifying_glass.png": "magnifying_glass.png",
  "fhir/R4/lformsFHIR.min.js": "lformsFHIR.min.js",
  "LICENSE.md": "LICENSE.md",
};

const version = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8")).version;
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
for (const [from, to] of Object.entries(files)) {
  fs.copyFileSync(path.join(dist, from), path.join(out, to));
}
fs.writeFileSync(path.join(out, "VERSION"), version + "\n");
console.log(`lforms ${version}: ${Object.keys(files).length} files -> ${path.relative(process.cwd(), out)}`);
