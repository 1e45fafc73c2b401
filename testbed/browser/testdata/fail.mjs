// fail.mjs is TestFailure's script (browser_test.go): a step whose
// expectText never comes true, so that the test can check what a failing
// script reports.
import { launch, step, expectText } from '../launch.mjs';

const { context, page } = await launch();
try {
  await step('load', () => page.goto(process.env.URL));
  await step('wrong text', () => expectText(page, '#status', 'never shown', { timeout: 500 }));
} finally {
  await context.close();
}
