// launch.mjs starts the browser of the browser tests: Debian's chromium
// (never a browser Playwright downloads), driven by playwright-core, able
// to reach loopback only. The Go side (browser.Run in browser.go) runs a
// test script with node and sets what this reads:
//
//   CHROMIUM         the browser executable (default /usr/bin/chromium)
//   BROWSER_PROFILE  a directory a fresh user-data-dir is made in
//   ARTIFACTS        where shot(NAME) writes NAME.png
//   NODE_PATH        the node_modules that scripts/npm-apps.sh playwright
//                    installed playwright-core into (.cache/playwright)
//
// A script imports this file by its relative path and never playwright-core
// itself: ES modules do not search NODE_PATH, so this file loads
// playwright-core through require, which does.
//
//   import { launch, step, expectText } from '../../browser/launch.mjs';
//   const { context, page, shot } = await launch();
//   try {
//     await step('load', () => page.goto(process.env.URL));
//     await step('title', () => expectText(page, 'h1', 'Fleet'));
//     await shot('console');
//   } finally {
//     await context.close();
//   }
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);

// The flags the browser runs with. The resolver rule maps every host name
// (and address) to "not found" but loopback's, so a page can reach nothing
// else, whatever it links to.
export const args = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE ::1',
];

// playwright is playwright-core's module object, for a script that needs
// more of it than launch gives (devices, errors, selectors).
export const playwright = loadPlaywright();

function loadPlaywright() {
  try {
    return require('playwright-core');
  } catch (err) {
    throw new Error(
      `launch.mjs: playwright-core is not installed where NODE_PATH points (${process.env.NODE_PATH || 'NODE_PATH unset'}): ` +
        `run scripts/setup.sh test (scripts/npm-apps.sh playwright): ${err.message}`,
    );
  }
}

// pages are the pages launch opened, newest last: a failed step
// screenshots the newest.
const pages = [];
let artifactsDir;

// launch starts chromium with a fresh profile and returns its context,
// its first page and shot(NAME), which saves a full-page screenshot of
// that page (or of opts.page) as ARTIFACTS/NAME.png and returns the path.
// opts go to launchPersistentContext (viewport, locale, timeout, ...);
// headless, the executable, the flags and the environment are fixed.
export async function launch(opts = {}) {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    throw new Error(`launch.mjs: chromium not found at ${executablePath}: run scripts/setup.sh test`);
  }
  const parent = process.env.BROWSER_PROFILE || os.tmpdir();
  fs.mkdirSync(parent, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(parent, 'profile-'));
  const context = await playwright.chromium.launchPersistentContext(userDataDir, {
    viewport: { width: 1280, height: 800 },
    timeout: 30_000,
    ...opts,
    executablePath,
    headless: true,
    args,
    env: browserEnv(),
  });
  const page = context.pages()[0] ?? (await context.newPage());
  pages.push(page);
  context.on('close', () => {
    const i = pages.indexOf(page);
    if (i >= 0) pages.splice(i, 1);
  });
  const shot = async (name, { page: p = page } = {}) => {
    const file = path.join(artifacts(), `${safeName(name)}.png`);
    await p.screenshot({ path: file, fullPage: true });
    return file;
  };
  return { context, page, shot };
}

// browserEnv is this process's environment less any proxy setting: the
// browser talks to loopback directly or not at all.
function browserEnv() {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^(https?|all|no|ftp)_proxy$/i.test(k)) delete env[k];
  }
  return env;
}

function artifacts() {
  if (!artifactsDir) {
    artifactsDir = process.env.ARTIFACTS || fs.mkdtempSync(path.join(os.tmpdir(), 'browser-artifacts-'));
    fs.mkdirSync(artifactsDir, { recursive: true });
  }
  return artifactsDir;
}

function safeName(name) {
  const s = String(name).replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^\.+/, '_');
  return s || 'shot';
}

// expectText waits, with Playwright's own waiting, until an element that
// selector matches shows text (a string it contains, or a RegExp it
// matches), and returns its text. Past timeout (default 10 s) it throws
// an error naming the selector, what was wanted and what was seen.
export async function expectText(page, selector, text, { timeout = 10_000 } = {}) {
  const want = text instanceof RegExp ? text : new RegExp(String(text).replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const loc = page.locator(selector).filter({ hasText: want }).first();
  try {
    await loc.waitFor({ state: 'attached', timeout });
    return await loc.textContent({ timeout: 1000 });
  } catch (err) {
    let seen;
    try {
      const all = await page.locator(selector).allTextContents();
      seen = all.length === 0 ? 'no element matches it' : `it shows ${all.map((s) => JSON.stringify(s.trim())).join(', ')}`;
    } catch (e) {
      seen = `reading it failed: ${e.message.split('\n')[0]}`;
    }
    const what = text instanceof RegExp ? String(text) : JSON.stringify(text);
    throw new Error(`expectText: ${selector} did not show ${what} within ${timeout} ms: ${seen}`, { cause: err });
  }
}

// step runs fn (async or not) as the named step of a script and returns
// what it returns. It prints "STEP name ok", or "STEP name FAILED: why",
// screenshots the newest page into ARTIFACTS as failed-NAME.png and
// throws an error that starts with the step's name.
export async function step(name, fn) {
  try {
    const v = await fn();
    console.log(`STEP ${name} ok`);
    return v;
  } catch (err) {
    const why = err?.message ?? String(err);
    console.log(`STEP ${name} FAILED: ${why.split('\n')[0]}`);
    const page = pages.at(-1);
    if (page && !page.isClosed()) {
      try {
        await page.screenshot({ path: path.join(artifacts(), `failed-${safeName(name)}.png`), fullPage: true, timeout: 5000 });
      } catch {
        // the screenshot is a courtesy; the step's error is what matters
      }
    }
    throw new Error(`step "${name}" failed: ${why}`, { cause: err });
  }
}
