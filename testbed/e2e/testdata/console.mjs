// console.mjs: the web console in a real browser, for TestConsole
// (console_test.go), which sets URL, OPERATOR_TOKEN, VIEWER_TOKEN,
// FLEETCTL, TOKEN_FILE and SPEC_GOOD, SPEC_SLOW, SPEC_HOLD (rollout specs).
import fs from 'node:fs';
import path from 'node:path';
import { step, expectText } from '../../browser/launch.mjs';
import { base, minute, fleetctl, openConsole } from './consolelib.mjs';

const env = process.env;

function create(spec) {
  const r = JSON.parse(fleetctl('rollout', 'create', '-f', spec, '-o', 'json'));
  console.log(`created rollout ${r.id} (${path.basename(spec)})`);
  return r.id;
}

const { context, page, shots, loads, confirms, noReload, opened, signIn, charted } = await openConsole();

const ids = {};
try {
  await step('sign in as the operator', async () => {
    await signIn(env.OPERATOR_TOKEN, '/rollouts');
    await expectText(page, '#whoami', 'operator');
    await expectText(page, 'h1', 'Rollouts');
    if (page.url().includes(env.OPERATOR_TOKEN)) throw new Error('the token is in the URL');
  });

  await step('a rollout started with fleetctl appears live', async () => {
    const before = loads();
    ids.Good = create(env.SPEC_GOOD);
    await page.locator(`tr[data-rollout="${ids.Good}"]`).waitFor({ timeout: minute });
    noReload(before, 'the new rollout');
  });

  await step('its waves advance on screen to succeeded', async () => {
    await page.locator(`a[href="/console/rollouts/${ids.Good}"]`).click();
    await expectText(page, 'h1', ids.Good);
    await page.waitForResponse((r) => r.url().endsWith('/console/events')).catch(() => {});
    const before = loads();
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
    const before = loads();
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
    await signIn(env.OPERATOR_TOKEN, `/rollouts/${ids.Hold}`);
    await expectText(page, '#rollout-state', 'running');
    const abort = page.getByRole('button', { name: 'Abort' });
    const asked = confirms();
    await abort.click();
    await expectText(page, '#rollout-state', 'aborted', { timeout: minute });
    if (confirms() !== asked + 1) throw new Error('abort did not ask for confirmation');
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
    // Chart.js was loaded for the page and drew into the canvas.
    await charted();
    await page.locator('#device-events tr[data-event]').first().waitFor();
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
