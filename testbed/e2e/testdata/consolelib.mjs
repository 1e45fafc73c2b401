// consolelib.mjs: what the console's browser scripts (console.mjs,
// experiment.mjs, drift.mjs) share. The Go side (console_test.go) sets
// URL and OPERATOR_TOKEN, and for scripts that run fleetctl FLEETCTL
// and TOKEN_FILE.
import { execFileSync } from 'node:child_process';
import { launch, expectText } from '../../browser/launch.mjs';

const env = process.env;
export const base = env.URL + '/console';
export const minute = 60_000;

// fleetctl runs fleetctl against the test's fleetd and returns its
// standard output.
export function fleetctl(...args) {
  return execFileSync(env.FLEETCTL, [...args, '--server', env.URL, '--token-file', env.TOKEN_FILE], { encoding: 'utf8' });
}

// openConsole launches the browser and returns its context and page with
// the helpers a console script uses. It counts the page's loads (a live
// update must not reload) and accepts, and counts, every confirmation.
export async function openConsole() {
  const { context, page, shot } = await launch();
  let loads = 0;
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) loads++;
  });
  let confirms = 0;
  page.on('dialog', async (d) => {
    confirms++;
    console.log(`dialog: ${d.message()}`);
    await d.accept();
  });

  // eventsOpen resolves once the page's event stream is open, so that
  // what changes from then on reaches the page.
  const eventsOpen = () => page.waitForResponse((r) => r.url().endsWith('/console/events') && r.status() === 200);

  return {
    context,
    page,
    shot,
    loads: () => loads,
    confirms: () => confirms,

    // shots saves the page at 1280 and at 390 px wide.
    async shots(name) {
      await shot(`${name}-1280`);
      await page.setViewportSize({ width: 390, height: 844 });
      await shot(`${name}-390`);
      await page.setViewportSize({ width: 1280, height: 800 });
    },

    // noReload throws if the page loaded again since the count since.
    noReload(since, what) {
      if (loads !== since) throw new Error(`${what}: the page was reloaded (${loads - since} navigations)`);
    },

    // opened loads url and waits until its event stream is open.
    async opened(url) {
      const stream = eventsOpen();
      await page.goto(url);
      await stream;
    },

    // signIn signs in afresh with token and lands on next (a path under
    // /console). The page is left first: a live refresh of the old one,
    // answered "not signed in" once the cookies are cleared, would send
    // the browser to the sign-in form without next.
    async signIn(token, next) {
      await page.goto('about:blank');
      await context.clearCookies();
      await page.goto(base + next);
      await expectText(page, 'h1', 'Sign in');
      await page.getByLabel('API token').fill(token);
      const stream = eventsOpen();
      await page.getByRole('button', { name: 'Sign in' }).click();
      await stream;
    },

    // charted waits until Chart.js has drawn every chart of the page.
    async charted() {
      await page.waitForFunction(() => {
        const cs = [...document.querySelectorAll('canvas[data-chart]')];
        return cs.length > 0 && typeof Chart !== 'undefined' && cs.every((c) => Chart.getChart(c));
      });
    },
  };
}
