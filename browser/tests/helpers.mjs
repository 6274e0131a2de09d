// What the browser tests share: the server under test (FLASHSALE_URL, started by
// scripts/browser.sh in dev mode), Chromium (Debian's, headless), the admin API, and screenshots
// at a desktop and a phone width.

import { mkdir } from 'node:fs/promises';
import { chromium } from 'playwright-core';

export const BASE = process.env.FLASHSALE_URL || 'http://127.0.0.1:8080';
const SHOTS = process.env.SCREENSHOTS || 'screenshots';
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };
/** A suffix that keeps names and users of one run apart from earlier runs on the same server. */
export const RUN = Date.now().toString(36);

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

/** A page that fails the test on any script error or failed console call. */
export async function newPage(browser, options = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, ...options });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(error));
  return page;
}

/** The admin API, as an operator named `actor`. */
export async function admin(path, { method = 'GET', body, headers = {}, actor = 'browser-tests' } = {}) {
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers: {
      Authorization: 'Bearer dev-admin-token',
      'X-Actor': actor,
      ...(body ? { 'Content-Type': 'application/json' } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return { body: json, etag: response.headers.get('etag') };
}

/** Saves the page as `name`-desktop.png and `name`-phone.png (full page), then restores the size. */
export async function shoot(page, name) {
  await mkdir(SHOTS, { recursive: true });
  const size = page.viewportSize();
  for (const [label, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(viewport);
    await page.screenshot({ path: `${SHOTS}/${name}-${label}.png`, fullPage: true });
  }
  await page.setViewportSize(size);
}
