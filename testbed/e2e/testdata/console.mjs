// console.mjs: the web console in a real browser, for TestConsole
// (console_test.go), which sets URL, OPERATOR_TOKEN, VIEWER_TOKEN,
// FLEETCTL, TOKEN_FILE and SPEC_GOOD, SPEC_SLOW, SPEC_HOLD (rollout specs).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { launch, step, expectText } from '../../browser/launch.mjs';

const env = process.env;
const base = env.URL + '/console';
const minute = 60_000;

function fleetctl(...args) {
  return execFileSync(env.FLEETCTL, [...args, '--server', env.URL, '--token-file', env.TOKEN_FILE], { encoding: 'utf8' });
}

function create(spec) {
  const r = JSON.parse(fleetctl('rollout', 'create', '-f', spec, '-o', 'json'));
  console.log(`created rollout ${r.id} (${path.basename(spec)})`);
  return r.id;
}

const { context, page, shot } = await launch();
// Navigations of the main frame: a live update must not reload.
let loads = 0;
page.on('framenavigated', (f) => {
  if (f === page.mainFrame()) loads++;
});
// Every confirmation the console asks for is accepted, and counted.
let confirms = 0;
page.on('dialog', async (d) => {
  confirms++;
  console.log(`dialog: ${d.message()}`);
  await d.accept();
});

// shots saves the page at 1280 and at 390 px wide.
async function shots(name) {
  await shot(`${name}-1280`);
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(`${name}-390`);
  await page.setViewportSize({ width: 1280, height: 800 });
}

// opened loads url and waits until its event stream is open, so that
// what changes from then on reaches the page.
async function opened(url) {
  const stream = page.waitForResponse((r) => r.url().endsWith('/console/events') && r.status() === 200);
  await page.goto(url);
  await stream;
}

function noReload(since, what) {
  if (loads !== since) throw new Error(`${what}: the page was reloaded (${loads - since} navigations)`);
}

async function signIn(token, next) {
  await page.goto(base + next);
  await expectText(page, 'h1', 'Sign in');
  await page.getByLabel('API token').fill(token);
  const stream = page.waitForResponse((r) => r.url().endsWith('/console/events') && r.status() === 200);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await stream;
}

const ids = {};
try {
  await step('sign in as the operator', async () => {
    await signIn(env.OPERATOR_TOKEN, '/rollouts');
    await expectText(page, '#whoami', 'operator');
    await expectText(page, 'h1', 'Rollouts');
    if (page.url().includes(env.OPERATOR_TOKEN)) throw new Error('the token is in the URL');
  });

  await step('a rollout started with fleetctl appears live', async () => {
    const before = loads;
    ids.Good = create(env.SPEC_GOOD);
    await page.locator(`tr[data-rollout="${ids.Good}"]`).waitFor({ timeout: minute });
    noReload(before, 'the new rollout');
  });

  await step('its waves advance on screen to succeeded', async () => {
    await page.locator(`a[href="/console/rollouts/${ids.Good}"]`).click();
    await expectText(page, 'h1', ids.Good);
    await page.waitForResponse((r) => r.url().endsWith('/console/events')).catch(() => {});
    const before = loads;
    for (const s of [0, 1, 2]) {
      await page.locator(`li.step[data-step="${s}"][data-state="done"]`).waitFor({ timeout: 3 * minute });
      console.log(`wave ${s} done on screen`);
    }
    await expectText(page, '#rollout-state', 'succeeded', { timeout: minute });
    noReload(before, 'the waves');
    await page.locator('#gates tr.gate[data-status="pass"]').first().waitFor();
    await shots('rollout-succeeded');
  });

  await step('a breaching gate shows red and the rollback appears', async () => {
    ids.Slow = create(env.SPEC_SLOW);
    await opened(`${base}/rollouts/${ids.Slow}`);
    const before = loads;
    await expectText(page, '#rollout-state', 'rolled_back', { timeout: 3 * minute });
    noReload(before, 'the rollback');
    await expectText(page, '#breach', 'latencyP95');
    const cell = page.locator('#gates tr.gate[data-gate="latencyP95"][data-status="breach"] .state');
    await cell.waitFor();
    const color = await cell.evaluate((el) => getComputedStyle(el).color);
    if (color !== 'rgb(198, 40, 40)') throw new Error(`the breaching gate is drawn in ${color}, not red`);
    await page.locator('#events tr[data-event="gate.breached"]').waitFor();
    await page.locator('#events tr[data-event="rolled_back"]').waitFor({ timeout: minute });
    await shots('rollout-rolled-back');
  });

  await step('a viewer has no action buttons, and a forged action is refused', async () => {
    ids.Hold = create(env.SPEC_HOLD);
    await context.clearCookies();
    await signIn(env.VIEWER_TOKEN, `/rollouts/${ids.Hold}`);
    await expectText(page, '#whoami', 'vera');
    await expectText(page, '#rollout-state', 'running');
    await page.locator('li.step[data-step="0"][data-state="current"]').waitFor();
    const buttons = await page.locator('main button').count();
    if (buttons !== 0) throw new Error(`a viewer's rollout page has ${buttons} buttons`);
    const [code, text] = await page.evaluate(async (id) => {
      const r = await fetch(`/console/rollouts/${id}/abort`, { method: 'POST', headers: { 'X-CSRF-Token': document.body.dataset.csrf } });
      return [r.status, await r.text()];
    }, ids.Hold);
    if (code !== 403 || !text.includes('needs operator')) throw new Error(`forged abort: ${code} ${text}`);
    await shots('viewer-rollout');
  });

  await step('the abort button aborts after a confirmation', async () => {
    await context.clearCookies();
    await signIn(env.OPERATOR_TOKEN, `/rollouts/${ids.Hold}`);
    await expectText(page, '#rollout-state', 'running');
    const abort = page.getByRole('button', { name: 'Abort' });
    const asked = confirms;
    await abort.click();
    await expectText(page, '#rollout-state', 'aborted', { timeout: minute });
    if (confirms !== asked + 1) throw new Error('abort did not ask for confirmation');
    const status = fleetctl('rollout', 'status', ids.Hold);
    if (!status.includes('aborted')) throw new Error(`fleetctl rollout status:\n${status}`);
    await shots('rollout-aborted');
  });

  await step('every page, at 1280 and 390 px', async () => {
    await page.goto(base + '/');
    await expectText(page, 'h1', 'Fleet');
    await expectText(page, '#devices-total', '6');
    await shots('fleet');
    await page.goto(base + '/devices');
    await expectText(page, '#device-count', 'of 6');
    await shots('devices');
    await page.locator('#device-list tbody a').first().click();
    await expectText(page, 'h1', 'Device');
    await page.locator('canvas[data-chart]').first().waitFor();
    await shots('device');
    await page.goto(base + '/bundles');
    await expectText(page, '#bundle-list', 'silero-vad@3.0.0');
    const signer = await page.locator('#bundle-list code.signer').first().textContent();
    if (!/^[0-9a-f]{16}$/.test(signer)) throw new Error(`signer key fingerprint ${signer}`);
    await shots('bundles');
    await page.goto(base + '/rollouts');
    await page.locator(`tr[data-rollout="${ids.Hold}"]`).waitFor();
    await shots('rollouts');
  });

} catch (err) {
  fs.writeFileSync(path.join(env.ARTIFACTS, 'rollouts.json'), JSON.stringify(ids));
  await context.close();
  throw err;
}
fs.writeFileSync(path.join(env.ARTIFACTS, 'rollouts.json'), JSON.stringify(ids));
await context.close();
