// The waiting room: the sales list (`/`) and one sale's page (`/s/{id}`), where a shopper signs in,
// joins the queue, follows their place live (the event stream, polling when it fails), orders when
// admitted and pays. What must survive a reload is kept in the browser: the sign-in in
// sessionStorage (it ends with the tab), the queue ticket and the purchase attempt in localStorage
// (a reload, a crash or a second tab keeps the place and never makes a second order).

import { api, clock, el, newKey, Problem, serverNow, syncClock } from './api.js';
import { duration, lang, money, t, when } from './i18n.js';
import { solve, wantsProof } from './pow.js';

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || '';
const devMode = meta('flashsale-dev') === 'true';
const paymentUrl = meta('flashsale-payment-url');
const view = document.getElementById('view');
const live = document.getElementById('live');
document.documentElement.lang = lang;
document.title = t('title');
document.getElementById('brand').textContent = t('title');

/** The signed-in buyer: a JWT from the shop (or the dev sign-in) and its subject. */
const auth = {
  get token() {
    return sessionStorage.getItem('flashsale.jwt');
  },
  get user() {
    return sessionStorage.getItem('flashsale.user');
  },
  set(token) {
    const payload = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    sessionStorage.setItem('flashsale.jwt', token);
    sessionStorage.setItem('flashsale.user', payload.sub);
  },
  clear() {
    sessionStorage.removeItem('flashsale.jwt');
    sessionStorage.removeItem('flashsale.user');
  },
};

// The shop's login hands the page a buyer JWT in the fragment (`/s/7#token=…`): the fragment never
// reaches a server or a log. It is kept for the tab and removed from the address bar at once.
const handed = new URLSearchParams(location.hash.slice(1)).get('token');
if (handed) {
  try {
    auth.set(handed);
  } catch {
    auth.clear();
  }
  history.replaceState(null, '', location.pathname + location.search);
}

/** Per buyer and sale, what survives a reload. */
function stored(kind, sale) {
  const key = `flashsale.${kind}.${auth.user}.${sale}`;
  return {
    get: () => JSON.parse(localStorage.getItem(key) || 'null'),
    set: (value) => localStorage.setItem(key, JSON.stringify(value)),
    clear: () => localStorage.removeItem(key),
  };
}

/** Tells screen readers (and the tests) what changed, once per change. */
function announce(text) {
  if (live.textContent !== text) live.textContent = text;
}

function problemText(problem) {
  const known = {
    sold_out: 'err_sold_out',
    closed: 'err_closed',
    not_open: 'err_not_open',
    rate_limited: 'err_rate_limited',
    code_invalid: 'err_code_invalid',
    code_used: 'err_code_used',
  };
  return known[problem.code] ? t(known[problem.code]) : t('err_generic', { detail: problem.message });
}

/** One element whose text is refreshed every second from a function of the server's clock. */
const tickers = new Set();
function ticking(tag, attrs, text) {
  const node = el(tag, attrs, text());
  tickers.add(() => {
    if (!node.isConnected) return false;
    node.textContent = text();
    return true;
  });
  return node;
}
setInterval(() => {
  for (const tick of tickers) if (!tick()) tickers.delete(tick);
}, 1000);

function countdown(sale) {
  const now = serverNow();
  if (now < Date.parse(sale.prequeue_opens_at)) return t('prequeue_in', { t: clock(Date.parse(sale.prequeue_opens_at) - now) });
  if (now < Date.parse(sale.opens_at)) return t('opens_in', { t: clock(Date.parse(sale.opens_at) - now) });
  return '';
}

function saleSummary(sale, link) {
  const name = link ? el('a', { href: `/s/${sale.id}` }, sale.name) : sale.name;
  return el(
    'section',
    { class: 'sale', 'data-sale': sale.id },
    el(link ? 'h2' : 'h1', {}, name),
    el(
      'p',
      { class: 'facts' },
      el('span', { class: `badge status-${sale.status}`, 'data-status': sale.status }, t(`status_${sale.status}`)),
      el('span', { class: 'price' }, money(sale.price_cents, sale.currency)),
      el('span', {}, t('limit', { n: sale.per_user_limit })),
      sale.units_left === null ? null : el('span', { class: 'num' }, t('units_left', { n: sale.units_left })),
    ),
    el('p', { class: 'when' }, t('opens_at', { when: when(sale.opens_at) })),
    ticking('p', { class: 'countdown num', 'data-countdown': '' }, () => countdown(sale)),
  );
}

async function listPage() {
  view.replaceChildren(el('p', {}, t('loading')));
  const { body } = await api('/sales');
  syncClock(body.server_time);
  const sales = body.sales.map((sale) => saleSummary(sale, true));
  view.replaceChildren(el('h1', {}, t('upcoming')), ...(sales.length ? sales : [el('p', {}, t('none'))]));
}

function signInBlock(onSignedIn) {
  if (auth.token) {
    return el(
      'p',
      { class: 'who' },
      t('signed_in_as', { name: auth.user }),
      ' ',
      el('button', { type: 'button', class: 'link', onclick: () => { auth.clear(); location.reload(); } }, t('sign_out')),
    );
  }
  if (!devMode) return el('p', { class: 'who' }, t('sign_in_shop'));
  const input = el('input', { id: 'name', name: 'name', required: true, maxlength: 64, autocomplete: 'username' });
  const error = el('p', { class: 'error', role: 'alert' });
  const form = el(
    'form',
    { class: 'sign-in' },
    el('p', { class: 'hint' }, t('sign_in_dev')),
    el('label', { for: 'name' }, t('sign_in_name')),
    input,
    el('button', { type: 'submit' }, t('sign_in')),
    error,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const { body } = await api('/dev/login', { method: 'POST', body: { name: input.value.trim() } });
      auth.set(body.token);
      onSignedIn();
    } catch (e) {
      error.textContent = problemText(e);
    }
  });
  return form;
}

/**
 * Follows the buyer's state: the event stream first (opened with a short-lived stream token, as
 * `EventSource` cannot send the JWT), polling at `poll_after_ms` when the stream fails. `onState`
 * gets every state; following stops at a final status or when `stop` is called.
 */
function follow(saleId, ticketStore, onState) {
  let stopped = false;
  let source = null;
  let timer = null;
  const finals = new Set(['sold_out', 'closed', 'expired']);
  const stop = () => {
    stopped = true;
    source?.close();
    clearTimeout(timer);
  };
  const take = (state) => {
    syncClock(state.server_time);
    if (state.ticket) ticketStore.set(state.ticket);
    onState(state);
    if (finals.has(state.status)) stop();
    return state;
  };
  const poll = async () => {
    if (stopped) return;
    let wait = 2000;
    try {
      const ticket = ticketStore.get();
      const { body } = await api(`/sales/${saleId}/queue`, {
        token: auth.token,
        headers: ticket ? { 'X-Queue-Ticket': ticket } : {},
      });
      take(body);
      wait = Math.min(Math.max(body.poll_after_ms ?? 2000, 250), 60000);
    } catch (e) {
      if (e.status === 429) wait = 1000 * (e.retryAfter || 2);
      else if (e.status === 0 || e.status >= 500) announce(t('st_offline'));
      else return onState(null, e);
    }
    if (!stopped) timer = setTimeout(poll, wait);
  };
  const stream = async () => {
    try {
      const { body } = await api(`/sales/${saleId}/queue/stream-token`, { method: 'POST', token: auth.token });
      if (stopped) return;
      source = new EventSource(`/sales/${saleId}/queue/events?stream_token=${encodeURIComponent(body.stream_token)}`);
      source.addEventListener('queue', (event) => take(JSON.parse(event.data)));
      source.onerror = () => {
        // The server ended the stream (a final status, its ten minutes) or it broke: poll.
        source.close();
        if (!stopped) poll();
      };
    } catch {
      poll();
    }
  };
  stream();
  return stop;
}

function queueLines(state, sale) {
  switch (state.status) {
    case 'waiting':
      if (state.position === null) {
        return [t('st_prequeue'), () => t('opens_in', { t: clock(Date.parse(state.opens_at) - serverNow()) })];
      }
      return [
        t('st_waiting'),
        t('st_place', { n: state.position }),
        t('st_ahead', { n: state.ahead ?? 0 }),
        state.eta_secs === null ? t('st_no_eta') : t('st_eta', { t: duration(state.eta_secs) }),
      ];
    case 'admitted':
      return [t('st_admitted'), () => t('st_admitted_until', { t: clock(Date.parse(state.expires_at) - serverNow()) })];
    case 'standby':
      return [
        t('st_standby', { held: state.units_held }),
        t('st_standby_place', { n: state.standby_place }),
        state.next_release_at ? () => t('st_next_release', { t: clock(Date.parse(state.next_release_at) - serverNow()) }) : null,
      ];
    default:
      return [t(`st_${state.status}`)];
  }
}

function orderView(order, sale, refresh) {
  const busy = (button, label) => {
    button.disabled = true;
    button.textContent = label;
  };
  const error = el('p', { class: 'error', role: 'alert' });
  const act = async (button, label, call) => {
    busy(button, label);
    try {
      await call();
    } catch (e) {
      error.textContent = problemText(e);
    }
    refresh();
  };
  const actions = [];
  if (order.status === 'pending_payment') {
    if (devMode) {
      const pay = el('button', { type: 'button', class: 'primary' }, t('pay'));
      pay.addEventListener('click', () =>
        act(pay, t('paying'), () => api(`/dev/orders/${order.id}/pay`, { method: 'POST', token: auth.token })),
      );
      actions.push(pay);
    } else if (paymentUrl) {
      const href = paymentUrl.replace('{order_id}', order.id).replace('{amount_cents}', order.amount_cents);
      actions.push(el('a', { class: 'button primary', href }, t('pay_elsewhere')));
    }
    const cancel = el('button', { type: 'button' }, t('cancel'));
    cancel.addEventListener('click', () => {
      if (confirm(t('cancel_confirm'))) {
        act(cancel, t('cancel'), () => api(`/orders/${order.id}/cancel`, { method: 'POST', token: auth.token }));
      }
    });
    actions.push(cancel);
  }
  return el(
    'section',
    { class: 'order', 'data-order': order.id, 'data-order-status': order.status },
    el('h2', {}, t(order.status === 'pending_payment' ? 'order_placed' : 'order_title', { id: order.id })),
    el('p', { class: 'facts' }, el('span', { class: 'badge' }, t(`os_${order.status}`)), `${order.quantity} × ${money(order.amount_cents / order.quantity, order.currency)}`),
    order.status === 'pending_payment'
      ? ticking('p', { class: 'deadline num' }, () => t('pay_before', { t: clock(Date.parse(order.expires_at) - serverNow()) }))
      : null,
    el('div', { class: 'actions' }, actions),
    error,
  );
}

async function ordersList(saleId) {
  const { body } = await api('/orders?limit=20', { token: auth.token });
  const mine = body.orders.filter((order) => order.sale_id === saleId);
  return el(
    'section',
    { class: 'orders' },
    el('h2', {}, t('your_orders')),
    mine.length
      ? el('ul', {}, mine.map((o) => el('li', { 'data-order': o.id }, `#${o.id} · ${o.quantity} · ${money(o.amount_cents, o.currency)} · ${t(`os_${o.status}`)}`)))
      : el('p', {}, t('no_orders')),
  );
}

async function salePage(saleId) {
  view.replaceChildren(el('p', {}, t('loading')));
  const { body: sale } = await api(`/sales/${saleId}`);
  const queueBox = el('section', { class: 'queue', 'aria-labelledby': 'queue-title' });
  const ordersBox = el('div');
  const codeBox = el('section', { class: 'code', 'aria-labelledby': 'code-title' });
  let summary = saleSummary(sale, false);
  view.replaceChildren(el('p', {}, el('a', { href: '/' }, t('back'))), summary, signInBlock(() => salePage(saleId)), queueBox, codeBox, ordersBox);
  // The sale's own status and units left, kept current (the view is cached a second by a CDN),
  // and read again at once when the buyer's own status changes.
  const updateSummary = async () => {
    try {
      const { body } = await api(`/sales/${saleId}`);
      const next = saleSummary(body, false);
      summary.replaceWith(next);
      summary = next;
    } catch {
      // Kept as it was; the queue box says what matters to this buyer.
    }
  };
  const summaryTimer = setInterval(() => (summary.isConnected ? updateSummary() : clearInterval(summaryTimer)), 5000);
  let lastStatus = null;
  if (!auth.token) return;

  const ticket = stored('ticket', saleId);
  const attempt = stored('attempt', saleId);
  let stop = () => {};
  const refreshOrders = async () => {
    try {
      ordersBox.replaceChildren(await ordersList(saleId));
    } catch {
      // The list is a convenience; the order view says what matters.
    }
  };

  const showOrder = async (orderId) => {
    stop();
    codeBox.replaceChildren();
    try {
      const { body: order } = await api(`/orders/${orderId}`, { token: auth.token });
      queueBox.replaceChildren(orderView(order, sale, () => showOrder(orderId)));
      announce(`${t('order_placed', { id: order.id })} ${t(`os_${order.status}`)}`);
    } catch (e) {
      queueBox.replaceChildren(el('p', { class: 'error', role: 'alert' }, problemText(e)));
    }
    refreshOrders();
  };

  /** Sends the purchase attempt kept in localStorage: the same key and body every time. */
  const sendAttempt = async (button) => {
    const pending = attempt.get();
    if (button) {
      button.disabled = true;
      button.textContent = t('ordering');
    }
    try {
      const { body: order } = await api(`/sales/${saleId}/orders`, {
        method: 'POST',
        token: auth.token,
        headers: { 'Idempotency-Key': pending.key },
        body: { admission_token: pending.admission_token, quantity: pending.quantity },
      });
      attempt.set({ ...pending, order_id: order.id });
      await showOrder(order.id);
    } catch (e) {
      if (e.status === 0 || e.status >= 500) {
        // Not known whether it went through: the same attempt, sent again, will say.
        setTimeout(() => sendAttempt(button), 2000);
        return;
      }
      attempt.clear();
      queueBox.append(el('p', { class: 'error', role: 'alert' }, problemText(e)));
      if (button) button.remove();
      refreshOrders();
    }
  };

  const orderForm = (state) => {
    const select = el('select', { id: 'quantity', name: 'quantity' });
    for (let n = 1; n <= sale.per_user_limit; n += 1) select.append(el('option', { value: n }, n));
    const button = el('button', { type: 'submit', class: 'primary' }, t('order'));
    const form = el('form', { class: 'order-form' }, el('label', { for: 'quantity' }, t('quantity')), select, button);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (button.disabled) return;
      // Kept before it is sent: a reload or a double click resends this attempt, never a new one.
      attempt.set({ key: newKey(), admission_token: state.admission_token, quantity: Number(select.value), batch_no: state.batch_no });
      sendAttempt(button);
    });
    return form;
  };

  const render = (state, problem) => {
    if (problem) {
      if (problem.status === 404) {
        ticket.clear();
        return joinBox();
      }
      queueBox.replaceChildren(el('p', { class: 'error', role: 'alert' }, problemText(problem)));
      return;
    }
    if (state.status !== lastStatus) {
      if (lastStatus !== null) updateSummary();
      lastStatus = state.status;
    }
    const lines = queueLines(state, sale).filter(Boolean);
    const [headline, ...rest] = lines;
    queueBox.replaceChildren(
      el('h2', { id: 'queue-title', 'data-queue-status': state.status }, headline),
      ...rest.map((line) => (typeof line === 'function' ? ticking('p', { class: 'num' }, line) : el('p', { class: 'num' }, line))),
      ...(state.status === 'admitted' ? [orderForm(state)] : []),
      // Pre-queue buyers' receipt for the draw (not announced: it does not change).
      ...(state.draw_receipt ? [el('p', { class: 'hint receipt', 'data-draw-receipt': state.draw_receipt }, t('st_receipt', { r: state.draw_receipt }))] : []),
    );
    announce(lines.filter((line) => typeof line === 'string').join(' '));
  };

  const startFollowing = () => {
    stop = follow(saleId, ticket, render);
  };

  // Joins; a sale asking a proof of work refuses with a challenge, solved here and sent back
  // (up to three times: a challenge can expire while a slow phone works).
  async function joinPayingProof(onSolving) {
    let headers = {};
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await api(`/sales/${saleId}/queue`, { method: 'POST', token: auth.token, headers });
      } catch (e) {
        if (!wantsProof(e) || attempt === 3) throw e;
        onSolving();
        const { solution } = await solve(e.body.pow.challenge, e.body.pow.bits);
        headers = { 'X-Pow-Challenge': e.body.pow.challenge, 'X-Pow-Solution': String(solution) };
      }
    }
  }

  function joinBox() {
    const button = el('button', { type: 'button', class: 'primary' }, t('join'));
    const error = el('p', { class: 'error', role: 'alert' });
    button.addEventListener('click', async () => {
      button.disabled = true;
      button.textContent = t('joining');
      try {
        const { body: state } = await joinPayingProof(() => {
          button.textContent = t('solving');
        });
        if (state.ticket) ticket.set(state.ticket);
        render(state);
        startFollowing();
      } catch (e) {
        error.textContent = problemText(e);
        button.disabled = false;
        button.textContent = t('join');
      }
    });
    queueBox.replaceChildren(button, error);
  }

  /**
   * A priority code (the brand's invitation): redeemed, it admits the buyer at once, whatever
   * their place in line, with an admission like the queue's (ordered through the same form).
   */
  function codeForm() {
    const input = el('input', { id: 'priority-code', name: 'code', autocomplete: 'off', spellcheck: 'false', required: true });
    const button = el('button', { type: 'submit' }, t('code_use'));
    const error = el('p', { class: 'error', role: 'alert' });
    const form = el('form', { class: 'code-form' }, el('label', { for: 'priority-code' }, t('code_label')), input, button, error);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (button.disabled || !input.value.trim()) return;
      button.disabled = true;
      button.textContent = t('code_checking');
      try {
        const { body } = await api(`/sales/${saleId}/queue/priority`, { method: 'POST', token: auth.token, body: { code: input.value } });
        stop();
        codeBox.replaceChildren();
        render({ ...body, status: 'admitted' });
      } catch (e) {
        error.textContent = problemText(e);
        button.disabled = false;
        button.textContent = t('code_use');
      }
    });
    codeBox.replaceChildren(el('h2', { id: 'code-title' }, t('code_prompt')), form);
  }

  refreshOrders();
  let pending = attempt.get();
  if (pending && pending.batch_no !== sale.batch_no) {
    // From an earlier batch of a weekly sale: that order is in the list below.
    attempt.clear();
    pending = null;
  }
  if (pending?.order_id) return showOrder(pending.order_id);
  if (pending) return sendAttempt(null);
  codeForm();
  if (ticket.get()) return startFollowing();
  joinBox();
}

async function main() {
  const match = location.pathname.match(/^\/s\/(\d+)$/);
  try {
    if (match) await salePage(Number(match[1]));
    else await listPage();
  } catch (e) {
    view.replaceChildren(el('p', { class: 'error', role: 'alert' }, e instanceof Problem ? problemText(e) : String(e)));
  }
}

main();
