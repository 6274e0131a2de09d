// The waiting room in a real browser: a buyer joins during the pre-queue and sees the countdown,
// gets a place at the draw, is admitted, orders, reloads mid-order without losing anything and
// pays; a second buyer (in Chinese) who joined after the opening is told the truth as it becomes
// known: waiting, standby while the only unit is in the first buyer's cart, sold out once paid.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { admin, BASE, launch, newPage, RUN, shoot } from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** The buyer JWT the page keeps for its tab. */
const jwtOf = (page) => page.evaluate(() => sessionStorage.getItem('flashsale.jwt'));

async function signIn(page, name) {
  await page.locator('#name').fill(name);
  await page.locator('form.sign-in button[type=submit]').click();
  await page.locator('.who').waitFor();
}

test('a buyer queues, is admitted, orders once across a reload and pays; another sees standby then sold out', async () => {
  // One unit: the admission lets one buyer in at a time, so the second buyer's view is certain.
  const opensAt = new Date(Date.now() + 12_000).toISOString();
  const { body: sale } = await admin('/admin/sales', {
    method: 'POST',
    body: {
      name: `Phone X browser drop ${RUN}`,
      sku: `PHONE-X-${RUN}`,
      price_cents: 499_900,
      currency: 'CNY',
      stock: 1,
      per_user_limit: 1,
      opens_at: opensAt,
      prequeue_secs: 600,
      admission_rate: 5,
      admission_ttl_secs: 60,
      payment_window_secs: 120,
    },
  });

  const alice = await newPage(browser, { locale: 'en-US' });
  await alice.goto(`${BASE}/`);
  await shoot(alice, '01-sales-list');
  await alice.getByRole('link', { name: sale.name }).click();
  await alice.waitForURL(`${BASE}/s/${sale.id}`);
  await alice.getByText('The sale opens in').waitFor();
  await signIn(alice, `alice-${RUN}`);
  await alice.getByRole('button', { name: 'Join the queue' }).click();
  const status = alice.locator('#queue-title');
  await alice.locator('[data-queue-status="waiting"]').waitFor();
  assert.match(await status.textContent(), /pre-queue/);
  // A pre-queue buyer is handed their draw receipt (to check their drawn place later).
  assert.match(await alice.locator('[data-draw-receipt]').getAttribute('data-draw-receipt'), /^[0-9a-f]{64}$/);
  await shoot(alice, '02-prequeue');

  // The draw at the opening gives a place; with nobody ahead, the admission comes next.
  await alice.locator('[data-queue-status="admitted"]').waitFor({ timeout: 60_000 });
  assert.equal(await alice.locator('#live').textContent().then((t) => t.includes("It's your turn!")), true);

  // The second buyer joins after the opening, behind the first, reading the page in Chinese.
  const bob = await newPage(browser, { locale: 'zh-CN' });
  await bob.goto(`${BASE}/s/${sale.id}`);
  await signIn(bob, `bob-${RUN}`);
  await bob.getByRole('button', { name: '加入排队' }).click();
  await bob.locator('[data-queue-status="waiting"]').waitFor();
  assert.match(await bob.locator('.queue').textContent(), /第 2 位/);
  assert.equal(await bob.locator('[data-draw-receipt]').count(), 0, 'joined after the draw: no receipt');
  await shoot(alice, '03-admitted');

  // Order, and reload before the answer can be shown: the attempt kept in localStorage is sent
  // again with the same Idempotency-Key, so the reload shows the one order, never a second.
  await alice.locator('#quantity').selectOption('1');
  await alice.getByRole('button', { name: 'Order now' }).click();
  await alice.reload();
  const pending = alice.locator('[data-order-status="pending_payment"]');
  await pending.waitFor();
  const orderId = await pending.getAttribute('data-order');
  await alice.reload();
  await pending.waitFor();
  assert.equal(await pending.getAttribute('data-order'), orderId);
  const orders = await fetch(`${BASE}/orders`, { headers: { Authorization: `Bearer ${await jwtOf(alice)}` } }).then((r) => r.json());
  assert.deepEqual(orders.orders.filter((o) => o.sale_id === sale.id).map((o) => String(o.id)), [orderId]);
  await alice.getByText(/Pay within \d+:\d\d/).waitFor();
  await shoot(alice, '04-order');

  // The only unit is in Alice's cart: Bob is in standby, told how many units may come back.
  await bob.locator('[data-queue-status="standby"]').waitFor({ timeout: 15_000 });
  assert.match(await bob.locator('.queue').textContent(), /1 件可能退回/);
  await shoot(bob, '05-standby-zh');

  await alice.getByRole('button', { name: 'Pay now (test)' }).click();
  await alice.locator('[data-order-status="paid"]').waitFor();
  await shoot(alice, '06-paid');

  // Paid: nothing can come back, and Bob is told so.
  await bob.locator('[data-queue-status="sold_out"]').waitFor({ timeout: 15_000 });
  assert.match(await bob.locator('#live').textContent(), /已售罄/);
  await shoot(bob, '07-sold-out-zh');

  // A reload keeps what the buyer had: Alice's paid order, Bob's sold-out line.
  await bob.reload();
  await bob.locator('[data-queue-status="sold_out"]').waitFor();
  assert.deepEqual([...alice.errors, ...bob.errors], []);
});

test('a buyer with a priority code is admitted from the page at once, into the units held for codes', async () => {
  const opensAt = Date.now() + 4_000;
  const { body: sale } = await admin('/admin/sales', {
    method: 'POST',
    body: {
      name: `Phone X invitation ${RUN}`,
      sku: `PHONE-X-CODE-${RUN}`,
      price_cents: 499_900,
      currency: 'CNY',
      stock: 3,
      per_user_limit: 1,
      opens_at: new Date(opensAt).toISOString(),
      prequeue_secs: 600,
      priority_units: 1,
    },
  });
  const { body: generated } = await admin(`/admin/sales/${sale.id}/priority-codes`, { method: 'POST', body: { count: 1 } });
  const [code] = generated.codes;

  const carol = await newPage(browser, { locale: 'en-US' });
  await carol.goto(`${BASE}/s/${sale.id}`);
  await signIn(carol, `carol-${RUN}`);
  await carol.getByText('Have a priority code?').waitFor();
  // Before the opening a code admits nobody yet; after it, a mistyped one is named as such.
  await carol.locator('#priority-code').fill(code);
  await carol.getByRole('button', { name: 'Use the code' }).click();
  await carol.locator('.code-form .error', { hasText: /\S/ }).waitFor();
  await carol.waitForTimeout(Math.max(0, opensAt + 500 - Date.now()));
  await carol.locator('#priority-code').fill('00000-00000-00000-00000');
  await carol.getByRole('button', { name: 'Use the code' }).click();
  await carol.getByText('That is not a priority code for this sale').waitFor();
  // The real one admits at once, typed loosely; no place in line is needed.
  await carol.locator('#priority-code').fill(code.toLowerCase().replaceAll('-', ' '));
  await carol.getByRole('button', { name: 'Use the code' }).click();
  await carol.locator('[data-queue-status="admitted"]').waitFor();
  await carol.getByRole('button', { name: 'Order now' }).click();
  await carol.locator('.order').waitFor();
  const { body: after } = await admin(`/admin/sales/${sale.id}`);
  const stats = after.current_batch.stats;
  assert.deepEqual([stats.available, stats.allotted, stats.reserved], [2, 0, 1], JSON.stringify(stats));
  assert.deepEqual(after.priority_codes.redeemed, 1);
  assert.deepEqual(carol.errors, []);
});

test('the pages carry their security headers and cache rules', async () => {
  const page = await fetch(`${BASE}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy'), /script-src 'self'/);
  assert.equal(page.headers.get('cache-control'), 'no-cache');
  const html = await page.text();
  const script = html.match(/src="(\/assets\/[0-9a-f]+\/waiting-room\.js)"/)[1];
  const asset = await fetch(`${BASE}${script}`);
  assert.equal(asset.status, 200);
  assert.match(asset.headers.get('cache-control'), /immutable/);
  assert.equal((await fetch(`${BASE}/assets/000000000000/waiting-room.js`)).status, 404);
  assert.equal((await fetch(`${BASE}/s/not-a-sale`)).status, 404);
});
