// Copies the built files the pages load from node_modules into web/static/vendor, which Flask
// serves and .gitignore keeps out of the repository. Run by `npm run build` (make install).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "static", "vendor");
const files = { "htmx.min.js": "node_modules/htmx.org/dist/htmx.min.js" };

mkdirSync(vendor, { recursive: true });
for (const [name, from] of Object.entries(files)) {
  copyFileSync(join(here, from), join(vendor, name));
  console.log(`web/static/vendor/${name} <- ${from}`);
}
