// experiment.mjs: the console's experiments pages in a real browser, for
// TestConsoleExperiment (console_experiment_test.go), which sets URL,
// OPERATOR_TOKEN, VIEWER_TOKEN, FLEETCTL, TOKEN_FILE, SPEC_AB (an A/B
// experiment spec) and PROMOTE_ARM (the arm to promote).
import fs from 'node:fs';
import path from 'node:path';
import { step, expectText } from '../../browser/launch.mjs';
import { base, minute, fleetctl, openConsole } from './consolelib.mjs';

const env = process.env;
const { context, page, shots, loads, confirms, noReload, signIn, charted } = await openConsole();

const out = { Statements: {} };
try {
  await step('sign in as the operator', async () => {
    await signIn(env.OPERATOR_TOKEN, '/experiments');
    await expectText(page, 'h1', 'Experiments');
    await expectText(page, 'nav a[aria-current="page"]', 'Experiments');
  });

  await step('an experiment started with fleetctl appears live', async () => {
    const before = loads();
    const r = JSON.parse(fleetctl('experiment', 'create', '-f', env.SPEC_AB, '-o', 'json'));
    out.Experiment = r.id;
    console.log(`created experiment ${r.id}`);
    await page.locator(`tr[data-experiment="${r.id}"]`).waitFor({ timeout: minute });
    noReload(before, 'the new experiment');
    await shots('experiments');
  });

  await step('its page shows both arms and, once completed, the comparison', async () => {
    await page.locator(`a[href="/console/experiments/${out.Experiment}"]`).click();
    await expectText(page, 'h1', out.Experiment);
    await page.waitForResponse((r) => r.url().endsWith('/console/events')).catch(() => {});
    const before = loads();
    await expectText(page, '#experiment-state', 'completed', { timeout: 3 * minute });
    noReload(before, 'the comparison');
    await expectText(page, '#verdict', 'Verdict');
    await expectText(page, '#statements li[data-test="errorRate"] .statement', 'error rate');
    for (const k of ['errorRate', 'latency', 'output']) {
      out.Statements[k] = (await page.locator(`#statements li[data-test="${k}"] .statement`).textContent()).trim();
      console.log(`${k}: ${out.Statements[k]}`);
    }
    await expectText(page, '#arms thead', 'A: control');
    await expectText(page, '#arms thead', 'B: candidate');
    for (const c of ['error-rate', 'latency']) {
      const label = await page.locator(`#chart-${c}`).getAttribute('aria-label');
      if (!label) throw new Error(`chart ${c} has no aria-label`);
    }
    await charted();
    await shots('experiment');
  });

  await step('a viewer has no Promote button', async () => {
    await signIn(env.VIEWER_TOKEN, `/experiments/${out.Experiment}`);
    await expectText(page, '#whoami', 'vera');
    await expectText(page, '#experiment-state', 'completed');
    const buttons = await page.locator('main button').count();
    if (buttons !== 0) throw new Error(`a viewer's experiment page has ${buttons} buttons`);
    await charted();
    await shots('viewer-experiment');
  });

  await step('Promote, after a confirmation, lands on the new rollout', async () => {
    await signIn(env.OPERATOR_TOKEN, `/experiments/${out.Experiment}`);
    await expectText(page, '#experiment-state', 'completed');
    const asked = confirms();
    await page.getByRole('button', { name: `Promote ${env.PROMOTE_ARM}` }).click();
    await page.waitForURL(/\/console\/rollouts\/[^/]+$/, { timeout: minute });
    if (confirms() !== asked + 1) throw new Error('promote did not ask for confirmation');
    out.Rollout = decodeURIComponent(new URL(page.url()).pathname.split('/').pop());
    console.log(`promoted into rollout ${out.Rollout}`);
    await expectText(page, 'h1', out.Rollout);
    await expectText(page, '#rollout-state', /running|succeeded/);
    await shots('promoted-rollout');
    await page.goto(`${base}/experiments/${out.Experiment}`);
    await expectText(page, '#experiment-state', 'promoted');
    await expectText(page, '#promoted-to', out.Rollout);
    if ((await page.locator('main button').count()) !== 0) throw new Error('a promoted experiment still offers Promote');
  });
} finally {
  fs.writeFileSync(path.join(env.ARTIFACTS, 'experiment.json'), JSON.stringify(out));
  await context.close();
}
