// console_devices.mjs: how fast the console's device list and fleet page
// come up with a large fleet, for BenchmarkConsoleDevices (URL,
// OPERATOR_TOKEN, DEVICES). Writes ARTIFACTS/timing.json.
import fs from 'node:fs';
import path from 'node:path';
import { launch, step, expectText } from '../../browser/launch.mjs';

const env = process.env;
const base = env.URL + '/console';
const rounds = 5;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const { context, page, shot } = await launch();
try {
  await step('sign in', async () => {
    await page.goto(base + '/devices');
    await page.getByLabel('API token').fill(env.OPERATOR_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expectText(page, '#device-count', `of ${env.DEVICES}`, { timeout: 60_000 });
  });
  const timing = { DevicesMs: 0, DevicesMaxMs: 0, FleetMs: 0, FleetMaxMs: 0, DevicesServerMs: 0 };
  await step('device list, first page', async () => {
    const total = [];
    const server = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = Date.now();
      await page.goto(base + '/devices');
      await page.locator('#device-list tbody tr').nth(49).waitFor();
      total.push(Date.now() - t0);
      server.push(await page.evaluate(() => {
        const n = performance.getEntriesByType('navigation')[0];
        return n.responseEnd - n.requestStart;
      }));
    }
    await expectText(page, '#device-count', `1–50 of ${env.DEVICES}`);
    console.log(`device list: ${total.join(', ')} ms (server ${server.map(Math.round).join(', ')} ms)`);
    Object.assign(timing, { DevicesMs: median(total), DevicesMaxMs: Math.max(...total), DevicesServerMs: median(server) });
    await shot('devices-10000');
  });
  await step('fleet page', async () => {
    const total = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = Date.now();
      await page.goto(base + '/');
      await expectText(page, '#devices-total', env.DEVICES);
      total.push(Date.now() - t0);
    }
    console.log(`fleet page: ${total.join(', ')} ms`);
    Object.assign(timing, { FleetMs: median(total), FleetMaxMs: Math.max(...total) });
    await shot('fleet-10000');
  });
  fs.writeFileSync(path.join(env.ARTIFACTS, 'timing.json'), JSON.stringify(timing));
} finally {
  await context.close();
}
