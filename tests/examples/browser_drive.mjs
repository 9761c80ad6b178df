// Drive examples/browser/index.html in headless Chromium as a person would: choose an image file, type
// the question, press Ask, read the answer; one screenshot per answer.
//
//   node tests/examples/browser_drive.mjs --puppeteer INSTALL_DIR --chromium /usr/bin/chromium \
//        --url http://127.0.0.1:PORT/?max_new_tokens=20 --items items.json --screenshots DIR
//
// INSTALL_DIR holds node_modules/puppeteer-core (installed by tests/examples/test_browser_page.py with
// PUPPETEER_SKIP_DOWNLOAD=1: the browser is the system's Chromium, none is downloaded).
// items.json: [{"id", "image": "/abs/path.png", "question"}, ...].
// Prints one JSON object: {"browser", "results": [{"id", "answer", "prompt", "input_ids", "token_ids",
// "pixel_shape", "pixel_values", "screenshot"}], "requests": {"local": n, "remote": [urls]}}.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
    options: {
        puppeteer: { type: 'string' },
        chromium: { type: 'string' },
        url: { type: 'string' },
        items: { type: 'string' },
        screenshots: { type: 'string' },
        'timeout-s': { type: 'string', default: '600' },
    },
});
for (const key of ['puppeteer', 'chromium', 'url', 'items', 'screenshots']) {
    if (!args[key]) {
        console.error(`missing --${key}`);
        process.exit(2);
    }
}
const require = createRequire(path.join(path.resolve(args.puppeteer), 'package.json'));
const mod = await import(pathToFileURL(require.resolve('puppeteer-core')).href);
const puppeteer = mod.default ?? mod;
const timeout = Number.parseInt(args['timeout-s'], 10) * 1000;

const origin = new URL(args.url).origin;
const requests = { local: 0, remote: [] };
const browser = await puppeteer.launch({
    executablePath: args.chromium,
    headless: true,
    protocolTimeout: timeout, // one CDP call may wait out a long WASM run on the page's main thread
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
});
let exitCode = 0;
try {
    const page = await browser.newPage();
    page.setDefaultTimeout(timeout);
    await page.setViewport({ width: 900, height: 860 });
    page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
    page.on('request', (r) => {
        const url = r.url();
        if (url.startsWith(origin) || url.startsWith('blob:') || url.startsWith('data:')) requests.local += 1;
        else requests.remote.push(url);
    });
    await page.goto(args.url, { waitUntil: 'load' });
    await page.waitForFunction(
        () => !document.getElementById('ask').disabled || document.getElementById('answer').dataset.state === 'error',
        { polling: 100 },
    );
    const loadStatus = await page.$eval('#status', (el) => el.textContent);
    if (await page.$eval('#answer', (el) => el.dataset.state === 'error')) throw new Error(`page: ${loadStatus}`);
    console.error(`[drive] ${loadStatus}`);

    const items = JSON.parse(readFileSync(args.items, 'utf8'));
    const results = [];
    for (const item of items) {
        const input = await page.$('#image');
        await input.uploadFile(item.image);
        await page.$eval('#question', (el, q) => { el.value = q; }, item.question);
        // the previous item left state 'done': clear it, so the wait below cannot return before this
        // click's run has started (and read the previous item's result)
        await page.$eval('#answer', (el) => { el.dataset.state = 'idle'; });
        // a DOM click, not a mouse click at the button's coordinates: the preview of a picture of
        // another size loads asynchronously and moves the button, so a mouse click could land beside it
        // and the wait below would never end (seen once in a clean clone)
        await page.$eval('#ask', (el) => el.click());
        await page.waitForFunction(
            () => ['done', 'error'].includes(document.getElementById('answer').dataset.state),
            { polling: 100 }, // a timer, not requestAnimationFrame (throttled in headless pages)
        );
        const state = await page.$eval('#answer', (el) => [el.dataset.state, el.textContent]);
        if (state[0] === 'error') throw new Error(`${item.id}: ${state[1]}`);
        const last = await page.evaluate(() => window.allavaLast);
        const shown = state[1];
        const screenshot = path.join(path.resolve(args.screenshots), `${item.id}.png`);
        await page.screenshot({ path: screenshot, fullPage: true });
        results.push({ id: item.id, shown, ...last, screenshot });
        console.error(`[drive] ${item.id}: ${JSON.stringify(shown)}`);
    }
    const version = await browser.version();
    process.stdout.write(JSON.stringify({ browser: version, results, requests }) + '\n');
} catch (err) {
    console.error(`[drive] ${err?.stack ?? err}`);
    exitCode = 1;
} finally {
    await browser.close();
}
process.exit(exitCode);
