// smoke.mjs is TestSmoke's browser side (browser_test.go): it loads the
// console page the test serves at $URL, clicks its button, waits for the
// button's new text and for the server-sent event the Go side pushes only
// after it has seen the click's POST ($EVENT), screenshots the page
// (smoke.png) and checks that the browser reaches nothing past loopback.
import { launch, step, expectText } from '../launch.mjs';

const url = new URL(process.env.URL);
const event = process.env.EVENT;
if (!event) throw new Error('smoke.mjs: EVENT is not set');

const { context, page, shot } = await launch();
try {
  await step('load', async () => {
    const res = await page.goto(url.href);
    if (!res.ok()) throw new Error(`GET ${url.href}: ${res.status()}`);
    await expectText(page, 'h1', 'Rollout console');
  });
  // The event stream is open before the click, so the event that follows
  // is pushed live, not replayed.
  await step('event stream open', () => expectText(page, '#sse', 'open'));
  await step('click', async () => {
    await page.getByRole('button', { name: 'Start the canary wave' }).click();
    await expectText(page, '#go', 'Started');
    await expectText(page, '#status', 'click recorded');
  });
  await step('server-sent event', () => expectText(page, '#event', event));
  await step('screenshot', () => shot('smoke'));
  await step('only loopback', async () => {
    // example.invalid never resolves anywhere; blocked.localhost would
    // reach this test's server (Chromium resolves *.localhost to
    // loopback itself) but for launch.mjs's resolver rule.
    const targets = ['http://example.invalid/', `http://blocked.localhost:${url.port}/`];
    for (const target of targets) {
      // A page of its own for each: closing a page after two failed
      // navigations in a row hangs (chromium 156, playwright-core 1.65).
      const probe = await context.newPage();
      let err;
      try {
        await probe.goto(target, { timeout: 10_000 });
      } catch (e) {
        err = e;
      } finally {
        await probe.close();
      }
      if (!err) throw new Error(`${target} loaded: the browser reached past loopback`);
      if (!/ERR_NAME_NOT_RESOLVED/.test(err.message)) {
        throw new Error(`${target}: want net::ERR_NAME_NOT_RESOLVED, got ${err.message.split('\n')[0]}`);
      }
      console.log(`${target} blocked: net::ERR_NAME_NOT_RESOLVED`);
    }
    // A fetch from the page fails the same way.
    const got = await page.evaluate(async (u) => {
      try {
        await fetch(u, { mode: 'no-cors' });
        return 'reached';
      } catch (e) {
        return `failed: ${e.message}`;
      }
    }, targets[0]);
    if (got === 'reached') throw new Error(`fetch ${targets[0]} from the page succeeded`);
    console.log(`fetch ${targets[0]} from the page ${got}`);
  });
} finally {
  await context.close();
}
