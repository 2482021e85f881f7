// donjon's web page in a real browser: Debian's headless Chromium, driven by playwright-core.
// Run by tests/e2e/browse.rs against a donjon it seeded; on its own:
//
//   DONJON_URL=http://127.0.0.1:8000 UI_FIXTURE='{...}' node tests/browser/ui.mjs
//
// UI_FIXTURE (JSON) names what was pushed: user, password, public (a busybox image), multi (a
// multi-arch index), hostile (an image whose annotation holds a <script>), signed (an image
// with a signature referrer), cached (a pull-through repository and its upstream), private
// (a repository only signed-in users see). SCREENSHOTS=dir also saves the catalog, a
// repository and an image page there.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.DONJON_URL;
const fx = JSON.parse(process.env.UI_FIXTURE || "{}");
const shots = process.env.SCREENSHOTS;
assert.ok(base, "DONJON_URL is not set");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
});
let failed = 0;
const consoleErrors = [];

async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, ...options });
  const page = await context.newPage();
  // A CSP violation or a script error is a defect of the page.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(`${page.url()}: ${m.text()}`); });
  page.on("pageerror", (e) => consoleErrors.push(`${page.url()}: ${e.message}`));
  return { context, page };
}

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n${e.stack || e}`);
  }
}

const repoLinks = (page) => page.$$eval("ul.repos li a", (as) => as.map((a) => a.textContent));

await step("the catalog lists what anyone may pull, with the cached repository's upstream", async () => {
  const { context, page } = await newPage();
  const resp = await page.goto(`${base}/ui/`);
  assert.equal(resp.status(), 200);
  const repos = await repoLinks(page);
  for (const r of [fx.public.repo, fx.multi.repo, fx.cached.repo]) assert.ok(repos.includes(r), `${r} not in ${repos}`);
  assert.ok(!repos.includes(fx.private.repo), `the private ${fx.private.repo} is listed to anyone`);
  const badge = await page.locator("li", { hasText: fx.cached.repo }).locator(".badge").textContent();
  assert.equal(badge, `cached from ${fx.cached.upstream}`);
  if (shots) await page.screenshot({ path: `${shots}/catalog.png`, fullPage: true });
  await context.close();
});

await step("the filter narrows the list", async () => {
  const { context, page } = await newPage();
  await page.goto(`${base}/ui/`);
  await page.fill("input[name=q]", fx.multi.repo.split("/").pop());
  await Promise.all([page.waitForURL(/[?&]q=/), page.press("input[name=q]", "Enter")]);
  assert.deepEqual(await repoLinks(page), [fx.multi.repo]);
  await context.close();
});

await step("an image page shows the index's platforms, and a platform its layers with sizes", async () => {
  const { context, page } = await newPage();
  await page.goto(`${base}/ui/`);
  await Promise.all([page.waitForURL(`${base}/ui/r/${fx.multi.repo}`), page.click(`text=${fx.multi.repo}`)]);
  await Promise.all([page.waitForURL(/:1\.0$/), page.click(`#tags >> text=${fx.multi.tag}`)]);
  const platforms = await page.$$eval("#platforms tbody tr td:first-child", (tds) => tds.map((t) => t.textContent));
  assert.deepEqual(platforms, ["linux/amd64", "linux/arm64/v8"]);
  assert.ok((await page.textContent("#summary")).includes(fx.multi.digest));
  await Promise.all([page.waitForURL(/@sha256:/), page.click("#platforms >> text=sha256:")]);
  const sizes = await page.$$eval("#layers td.num", (tds) => tds.map((t) => t.textContent));
  assert.ok(sizes.length >= 1 && sizes.every((s) => /^\d+(\.\d)? (B|KiB|MiB|GiB)$/.test(s)), `layer sizes: ${sizes}`);
  assert.ok((await page.textContent("#summary")).includes("linux/amd64"));
  await context.close();
});

await step("a copy button puts the pull command on the clipboard", async () => {
  const { context, page } = await newPage();
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  await page.goto(`${base}/ui/r/${fx.public.repo}:${fx.public.tag}`);
  const host = new URL(base).host;
  const want = `docker pull ${host}/${fx.public.repo}:${fx.public.tag}`;
  await page.click(`button[data-copy="${want}"]`);
  await page.waitForFunction(() => document.querySelector("button.copy").textContent === "Copied");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), want);
  if (shots) await page.screenshot({ path: `${shots}/image.png`, fullPage: true });
  await context.close();
});

await step("an annotation holding a <script> is shown as text and never runs", async () => {
  const { context, page } = await newPage();
  await page.goto(`${base}/ui/r/${fx.hostile.repo}:${fx.hostile.tag}`);
  const cell = await page.textContent("#annotations");
  assert.ok(cell.includes(fx.hostile.annotation), `annotations: ${cell}`);
  assert.equal(await page.evaluate(() => window.pwned), undefined, "the annotation's script ran");
  assert.equal(await page.locator("main script").count(), 0);
  await context.close();
});

await step("referrers are listed by artifact type", async () => {
  const { context, page } = await newPage();
  await page.goto(`${base}/ui/r/${fx.signed.repo}@${fx.signed.digest}`);
  const refs = await page.textContent("#referrers");
  assert.ok(refs.includes(fx.signed.artifactType) && refs.includes(fx.signed.referrer.slice(0, 19)), refs);
  await context.close();
});

await step("a private repository asks for a login, and the login reveals it", async () => {
  const { context, page } = await newPage();
  const resp = await page.goto(`${base}/ui/r/${fx.private.repo}`);
  assert.equal(resp.status(), 401);
  await page.fill("input[name=username]", fx.user);
  await page.fill("input[name=password]", "not-the-password");
  await Promise.all([page.waitForURL(`${base}/ui/login`), page.click("button[type=submit]")]);
  assert.ok((await page.textContent(".notice")).includes("Wrong user name or password"));
  await page.fill("input[name=username]", fx.user);
  await page.fill("input[name=password]", fx.password);
  await Promise.all([page.waitForURL(`${base}/ui/r/${fx.private.repo}`), page.click("button[type=submit]")]);
  const tags = await page.$$eval("#tags tbody td:first-child a", (as) => as.map((a) => a.textContent));
  assert.ok(tags.includes(fx.private.tag), `tags: ${tags}`);
  const cookies = await context.cookies();
  const c = cookies.find((c) => c.name === "donjon_ui");
  assert.ok(c && c.httpOnly && c.sameSite === "Strict", JSON.stringify(cookies));
  if (shots) await page.screenshot({ path: `${shots}/repository.png`, fullPage: true });
  await page.goto(`${base}/ui/`);
  assert.ok((await repoLinks(page)).includes(fx.private.repo));
  await page.click("text=Sign out");
  await page.waitForURL(`${base}/ui/`);
  assert.ok(!(await repoLinks(page)).includes(fx.private.repo));
  await context.close();
});

await step("a phone's width: nothing wider than the screen; dark theme from the preference", async () => {
  const { context, page } = await newPage({ viewport: { width: 375, height: 740 }, isMobile: true, colorScheme: "dark" });
  await page.goto(`${base}/ui/r/${fx.multi.repo}:${fx.multi.tag}`);
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= width, `the page is ${scroll}px wide on a ${width}px screen`);
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = bg.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 150, `dark preference, background ${bg}`);
  await context.close();
  const light = await newPage({ colorScheme: "light" });
  await light.page.goto(`${base}/ui/`);
  const lbg = await light.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.ok(lbg.match(/\d+/g).map(Number).reduce((a, b) => a + b) > 600, `light preference, background ${lbg}`);
  await light.context.close();
});

await step("no script error or policy violation on any page", async () => {
  assert.deepEqual(consoleErrors, []);
});

await browser.close();
if (failed) {
  console.log(`${failed} browser check(s) failed`);
  process.exit(1);
}
console.log("all browser checks passed");
