// The single source of tessera.js is crates/server/web/tessera.js, which tessera embeds and
// serves at /tessera.js. This copies it into the package (before `npm pack` / `npm publish`,
// as the `prepack` script); the copy is not committed.
import { copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
copyFileSync(join(here, "..", "..", "crates", "server", "web", "tessera.js"), join(here, "tessera.js"));
