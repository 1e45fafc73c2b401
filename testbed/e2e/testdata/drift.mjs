// drift.mjs: the console's drift page in a real browser, for TestDrift
// (drift_test.go), which sets URL, OPERATOR_TOKEN, BUNDLE (name@version),
// SINCE (the start of the phase in which the noisy room drifted, RFC
// 3339), BY (the label key), NOISY and QUIET (its two values).
import { step, expectText } from '../../browser/launch.mjs';
import { base, openConsole } from './consolelib.mjs';

const env = process.env;
const { context, page, shots, signIn } = await openConsole();

try {
  await step('sign in as the operator', async () => {
    await signIn(env.OPERATOR_TOKEN, '/drift');
    await expectText(page, '#whoami', 'operator');
  });

  await step('with no bundle named, the page picks the one with drift windows', async () => {
    await expectText(page, 'h1', `Drift of ${env.BUNDLE}`);
    await page.locator('#drift-verdict[data-verdict]').waitFor();
    const selected = await page.getByLabel('Bundle').inputValue();
    if (selected !== env.BUNDLE) throw new Error(`the bundle select shows ${selected}, want ${env.BUNDLE}`);
    await expectText(page, 'nav a[aria-current="page"]', 'Drift');
  });

  await step('the noisy room drifted, the quiet one did not', async () => {
    const q = new URLSearchParams({ bundle: env.BUNDLE, since: env.SINCE, by: env.BY });
    await page.goto(`${base}/drift?${q}`);
    await expectText(page, 'h1', `Drift of ${env.BUNDLE}`);
    const noisy = page.locator(`#drift-by tr[data-label="${env.NOISY}"]`);
    const quiet = page.locator(`#drift-by tr[data-label="${env.QUIET}"]`);
    await noisy.waitFor();
    await quiet.waitFor();
    const [nv, qv] = [await noisy.getAttribute('data-verdict'), await quiet.getAttribute('data-verdict')];
    console.log(`${env.BY}=${env.NOISY}: ${nv}, ${env.BY}=${env.QUIET}: ${qv}`);
    if (nv !== 'drift') throw new Error(`the ${env.NOISY} row's verdict is ${nv}, want drift`);
    if (qv !== 'ok') throw new Error(`the ${env.QUIET} row's verdict is ${qv}, want ok`);
    await expectText(page, `#drift-by tr[data-label="${env.NOISY}"]`, 'rms');
    const color = await noisy.locator('.state').evaluate((el) => getComputedStyle(el).color);
    if (color !== 'rgb(198, 40, 40)') throw new Error(`the drifted row's verdict is drawn in ${color}, not red`);
  });

  await step('features, charts and the score over time', async () => {
    const rows = await page.locator('#drift-features tbody tr').count();
    if (rows !== 7) throw new Error(`the features table has ${rows} rows, want 7`);
    await page.locator('#drift-features tr[data-feature="zcr"]').waitFor();
    const slices = await page.locator('#drift-slices tbody tr').count();
    if (slices !== 12) throw new Error(`the score table has ${slices} slices, want 12`);
    for (const kind of ['gates', 'line', 'score']) {
      const canvas = page.locator(`canvas[data-chart="${kind}"]`);
      await canvas.waitFor();
      if (!(await canvas.getAttribute('aria-label'))) throw new Error(`the ${kind} chart has no aria-label`);
      // Chart.js may load after the page: wait for the chart.
      await page
        .waitForFunction((el) => typeof Chart !== 'undefined' && !!Chart.getChart(el), await canvas.elementHandle(), { timeout: 10_000 })
        .catch((err) => {
          throw new Error(`the ${kind} chart was not drawn: ${err.message.split('\n')[0]}`);
        });
    }
    await shots('drift');
  });

  await step('a selector narrows the report to the noisy room', async () => {
    await page.getByLabel('Label selector').fill(`${env.BY}=${env.NOISY}`);
    await page.getByRole('button', { name: 'Show' }).click();
    await expectText(page, '#drift-range', `${env.BY}=${env.NOISY}`);
    await page.locator('#drift-verdict[data-verdict="drift"]').waitFor();
  });

  // histogram reads the drawn reference-vs-current chart of a feature:
  // its verdict and the total variation distance between the two
  // distributions (half the sum of the differences, in percent).
  async function histogram(selector, feature) {
    const q = new URLSearchParams({ bundle: env.BUNDLE, since: env.SINCE, selector });
    await page.goto(`${base}/drift?${q}`);
    const fig = page.locator(`#drift-histograms figure[data-feature="${feature}"]`);
    await fig.waitFor();
    const canvas = fig.locator('canvas[data-chart="bars"]');
    const h = await page.waitForFunction(
      (el) => {
        const c = typeof Chart !== 'undefined' && Chart.getChart(el);
        return c && c.data.datasets.map((d) => ({ label: d.label, data: d.data }));
      },
      await canvas.elementHandle(),
      { timeout: 10_000 },
    );
    const sets = await h.jsonValue();
    const by = Object.fromEntries(sets.map((d) => [d.label, d.data]));
    if (!by.reference || !by.current) throw new Error(`${feature}'s histogram has series ${sets.map((d) => d.label)}, want reference and current`);
    for (const [name, data] of Object.entries(by)) {
      const sum = data.reduce((a, b) => a + b, 0);
      if (Math.abs(sum - 100) > 1e-6) throw new Error(`${feature}'s ${name} shares sum to ${sum}%, want 100`);
    }
    const tv = by.reference.reduce((a, r, i) => a + Math.abs(r - by.current[i]), 0) / 2;
    return { verdict: await fig.getAttribute('data-verdict'), tv, bins: by.reference.length };
  }

  await step('reference vs current histograms: the noisy room moved away, the quiet one did not', async () => {
    const figures = await page.locator('#drift-histograms figure').count();
    if (figures !== 7) throw new Error(`${figures} histograms, want one per feature (7)`);
    const noisy = await histogram(`${env.BY}=${env.NOISY}`, 'rms');
    await shots('drift-noisy');
    const quiet = await histogram(`${env.BY}=${env.QUIET}`, 'rms');
    console.log(`rms histogram (${noisy.bins} bins): ${env.NOISY} ${noisy.verdict}, distance ${noisy.tv.toFixed(1)}%; ${env.QUIET} ${quiet.verdict}, distance ${quiet.tv.toFixed(1)}%`);
    if (noisy.verdict !== 'drift' || quiet.verdict !== 'ok') throw new Error(`rms verdicts ${noisy.verdict} and ${quiet.verdict}, want drift and ok`);
    if (!(noisy.tv > 2 * quiet.tv)) throw new Error(`the noisy room's rms is ${noisy.tv}% from the reference, the quiet room's ${quiet.tv}%: want the noisy one clearly further`);
  });
} finally {
  await context.close();
}
