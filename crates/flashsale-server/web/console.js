// The operations console (`/admin/`): sign in with the admin token (kept in sessionStorage, sent
// as the bearer header, never in a URL), the sales with their live numbers, creating a sale (one-off
// or weekly) with each validation error beside its field, pause / resume / close, stock and limit
// changes guarded by `If-Match` (a stale edit shows who changed what since), the audit trail, the
// draw's seed once published, and a running batch's numbers charted over the last minutes.

import { api, el, Problem } from './api.js';

const view = document.getElementById('view');
const live = document.getElementById('live');
const session = {
  get token() {
    return sessionStorage.getItem('flashsale.admin');
  },
  get actor() {
    return sessionStorage.getItem('flashsale.actor') || '';
  },
  set(token, actor) {
    sessionStorage.setItem('flashsale.admin', token);
    sessionStorage.setItem('flashsale.actor', actor);
  },
  clear() {
    sessionStorage.removeItem('flashsale.admin');
    sessionStorage.removeItem('flashsale.actor');
  },
};

/** An admin call: the token as bearer, the operator's name as `X-Actor` for the audit trail. */
function admin(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (session.actor) headers['X-Actor'] = session.actor;
  return api(path, { ...options, headers, token: session.token });
}

function say(text) {
  live.textContent = text;
}

let refresher = null;
/** Runs `refresh` every `ms` until the view changes (only one refresher at a time). */
function every(ms, refresh) {
  clearInterval(refresher);
  refresher = setInterval(refresh, ms);
}

const fmt = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

function signIn() {
  clearInterval(refresher);
  const token = el('input', { id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'current-password' });
  const actor = el('input', { id: 'actor', name: 'actor', maxlength: 64, pattern: '[!-~]{1,64}', autocomplete: 'username' });
  const error = el('p', { class: 'error', role: 'alert' });
  const form = el(
    'form',
    { class: 'sign-in' },
    el('h1', {}, 'Operations console'),
    el('label', { for: 'token' }, 'Admin token'),
    token,
    el('label', { for: 'actor' }, 'Your name (recorded in the audit trail)'),
    actor,
    el('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    error,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    session.set(token.value, actor.value.trim());
    try {
      await admin('/admin/sales?limit=1');
      route();
    } catch (e) {
      session.clear();
      error.textContent = e.status === 401 ? 'That token is not the admin token.' : e.message;
    }
  });
  view.replaceChildren(el('section', {}, form));
  token.focus();
}

function nav() {
  return el(
    'p',
    { class: 'facts' },
    el('a', { href: '#/' }, 'Sales'),
    el('a', { href: '#/new' }, 'New sale'),
    el('span', { class: 'who' }, session.actor ? `Signed in as ${session.actor}` : 'Signed in'),
    el('button', { type: 'button', class: 'link', onclick: () => { session.clear(); signIn(); } }, 'Sign out'),
  );
}

function statsCells(batch) {
  const s = batch?.stats;
  const cell = (v) => el('td', {}, v ?? '—');
  return [cell(s?.stock), cell(s?.available), cell(s?.reserved), cell(s?.sold), cell(s?.queued), cell(s?.admitted)];
}

async function salesPage() {
  const body = el('tbody');
  const table = el(
    'table',
    { id: 'sales' },
    el('thead', {}, el('tr', {}, ['Sale', 'Status', 'Opens', 'Stock', 'Available', 'Reserved', 'Sold', 'Queued', 'Admitted'].map((h) => el('th', { scope: 'col' }, h)))),
    body,
  );
  const error = el('p', { class: 'error', role: 'alert' });
  view.replaceChildren(nav(), el('h1', {}, 'Sales'), el('section', {}, table), error);
  const refresh = async () => {
    try {
      const { body: list } = await admin('/admin/sales?limit=50');
      body.replaceChildren(
        ...list.sales.map((sale) =>
          el(
            'tr',
            { 'data-sale': sale.id },
            el('td', {}, el('a', { href: `#/sales/${sale.id}` }, `#${sale.id} ${sale.name}`)),
            el('td', {}, sale.current_batch ? `${sale.current_batch.status}${sale.current_batch.paused ? ' (paused)' : ''}` : 'ended'),
            el('td', {}, fmt(sale.current_batch?.opens_at)),
            ...statsCells(sale.current_batch),
          ),
        ),
      );
      error.textContent = '';
    } catch (e) {
      if (e.status === 401) return signIn();
      error.textContent = e.message;
    }
  };
  await refresh();
  every(2000, refresh);
}

/** The wall-clock `local` (`YYYY-MM-DDTHH:MM`) in time zone `zone`, as an RFC 3339 instant. */
function zonedInstant(local, zone) {
  const [date, time] = local.split('T');
  const [y, mo, d] = date.split('-').map(Number);
  const [h, mi] = time.split(':').map(Number);
  const wanted = Date.UTC(y, mo - 1, d, h, mi);
  const offsetAt = (instant) => {
    const parts = Object.fromEntries(
      new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric' })
        .formatToParts(new Date(instant))
        .map((p) => [p.type, p.value]),
    );
    return Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute) - instant;
  };
  let instant = wanted - offsetAt(wanted);
  instant = wanted - offsetAt(instant);
  return new Date(instant).toISOString();
}

let zones = null;
/** The time zones the server accepts (listed in its OpenAPI document). */
async function timeZones() {
  if (!zones) {
    const { body } = await api('/openapi.json');
    zones = body.components.schemas.WeeklyInput.properties.timezone.enum;
  }
  return zones;
}

function field(name, label, input, hint) {
  input.id = `f-${name.replace('.', '-')}`;
  input.name = name;
  return el(
    'div',
    { class: 'field', 'data-field': name },
    el('label', { for: input.id }, label),
    input,
    hint ? el('div', { class: 'hint' }, hint) : null,
    el('div', { class: 'field-error', id: `${input.id}-error`, role: 'alert' }),
  );
}

/** Shows each of a problem's field errors beside its field; the rest in `general`. */
function showFieldErrors(form, problem, general) {
  form.querySelectorAll('.field-error').forEach((node) => (node.textContent = ''));
  form.querySelectorAll('[aria-invalid]').forEach((node) => node.removeAttribute('aria-invalid'));
  const unplaced = [];
  for (const { field: name, message } of problem.body.errors || []) {
    const box = form.querySelector(`[data-field="${name}"]`);
    if (!box) {
      unplaced.push(`${name}: ${message}`);
      continue;
    }
    box.querySelector('.field-error').textContent = message;
    box.querySelector('input, select')?.setAttribute('aria-invalid', 'true');
  }
  general.textContent = problem.body.errors ? unplaced.join('; ') : problem.message;
  form.querySelector('[aria-invalid]')?.focus();
}

async function newSalePage() {
  clearInterval(refresher);
  const zoneList = await timeZones();
  const zoneSelect = (name) => {
    const select = el('select', {}, zoneList.map((z) => el('option', { value: z, selected: z === 'Asia/Shanghai' }, z)));
    select.dataset.name = name;
    return select;
  };
  const number = (value, min) => el('input', { type: 'number', inputmode: 'numeric', value, min });
  const kind = el('select', {}, el('option', { value: 'once' }, 'One-off'), el('option', { value: 'weekly' }, 'Weekly'));
  const onceBox = el(
    'div',
    {},
    field('opens_at', 'Opens at (local time in the zone below)', el('input', { type: 'datetime-local' })),
    field('opens_zone', 'Time zone', zoneSelect('opens_zone')),
  );
  const weekday = el('select', {}, ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'].map((d) => el('option', { value: d, selected: d === 'tue' }, d)));
  const weeklyBox = el(
    'div',
    { hidden: true },
    field('weekly.weekday', 'Weekday', weekday),
    field('weekly.time', 'Time (HH:MM, 24-hour)', el('input', { value: '12:00', placeholder: '12:00' })),
    field('weekly.timezone', 'Time zone', zoneSelect('weekly.timezone')),
  );
  kind.addEventListener('change', () => {
    onceBox.hidden = kind.value !== 'once';
    weeklyBox.hidden = kind.value !== 'weekly';
  });
  const general = el('p', { class: 'error', role: 'alert' });
  const form = el(
    'form',
    { id: 'new-sale', novalidate: true },
    el(
      'div',
      { class: 'grid' },
      field('name', 'Name', el('input', { maxlength: 200 })),
      field('sku', 'SKU', el('input', {})),
      field('price_cents', 'Price (minor units: fen, cents)', number('', 1)),
      field('currency', 'Currency', el('input', { value: 'CNY', maxlength: 3 })),
      field('stock', 'Stock per batch', number('', 1)),
      field('per_user_limit', 'Limit per buyer', number('1', 1)),
      field('prequeue_secs', 'Pre-queue (seconds before opening)', number('600', 0)),
      field('admission_rate', 'Admissions per second', number('', 1), 'empty: the server default'),
      field('admission_ttl_secs', 'Turn length (seconds)', number('', 5), 'empty: the server default'),
      field('payment_window_secs', 'Payment window (seconds)', number('', 30), 'empty: the server default'),
      field('duration_secs', 'Batch length (seconds)', number('', 60), 'empty: until sold out or closed'),
      field('join_pow_bits', 'Proof of work per join (bits)', number('0', 0), '0: none; each bit doubles the work'),
      field('join_pow_adaptive_rate', 'Adaptive above (joins per second)', number('', 1), 'empty: fixed difficulty'),
      field('schedule', 'Schedule', kind),
    ),
    onceBox,
    weeklyBox,
    el('button', { type: 'submit', class: 'primary' }, 'Create sale'),
    general,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = (name) => form.querySelector(`[name="${name}"]`).value.trim();
    const whole = (name) => (value(name) === '' ? undefined : Number(value(name)));
    const sale = {
      name: value('name'),
      sku: value('sku'),
      price_cents: whole('price_cents') ?? 0,
      currency: value('currency'),
      stock: whole('stock') ?? 0,
      per_user_limit: whole('per_user_limit') ?? 0,
      prequeue_secs: whole('prequeue_secs'),
      admission_rate: whole('admission_rate'),
      admission_ttl_secs: whole('admission_ttl_secs'),
      payment_window_secs: whole('payment_window_secs'),
      duration_secs: whole('duration_secs'),
      join_pow_bits: whole('join_pow_bits'),
      join_pow_adaptive_rate: whole('join_pow_adaptive_rate'),
    };
    if (kind.value === 'once') {
      if (!value('opens_at')) {
        return showFieldErrors(form, new Problem(422, { errors: [{ field: 'opens_at', message: 'choose when the sale opens' }] }), general);
      }
      sale.opens_at = zonedInstant(value('opens_at'), value('opens_zone'));
    } else {
      sale.weekly = { weekday: value('weekly.weekday'), time: value('weekly.time'), timezone: value('weekly.timezone') };
    }
    try {
      const { body: created } = await admin('/admin/sales', { method: 'POST', body: sale });
      say(`Sale ${created.id} created`);
      location.hash = `#/sales/${created.id}`;
    } catch (e) {
      if (e.status === 401) return signIn();
      showFieldErrors(form, e, general);
    }
  });
  view.replaceChildren(nav(), el('h1', {}, 'New sale'), el('section', {}, form));
}

/** A small line chart of the last samples, one line per series, no library. */
function chart(samples, series) {
  const width = 600;
  const height = 120;
  const max = Math.max(1, ...samples.flatMap((s) => series.map(([key]) => s[key] ?? 0)));
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  svg.setAttribute('preserveAspectRatio', 'none');
  const label = series.map(([key, , name]) => `${name} ${samples.at(-1)?.[key] ?? '—'}`).join(', ');
  svg.setAttribute('aria-label', label);
  for (const [key, color] of series) {
    const points = samples.map((s, i) => `${(i / Math.max(1, samples.length - 1)) * width},${height - ((s[key] ?? 0) / max) * (height - 4) - 2}`);
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', points.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', color);
    line.setAttribute('stroke-width', '2');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(line);
  }
  return svg;
}

const CHART_SAMPLES = 300;

/** Hands the body of `response` to the browser as a file named `name` (a download). */
async function saveAs(response, name) {
  const link = el('a', { href: URL.createObjectURL(await response.blob()), download: name });
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

/** Saves a batch's sale report (one self-contained HTML page) through the bearer-authenticated API. */
async function downloadReport(id, batchNo) {
  const response = await fetch(`/admin/sales/${id}/batches/${batchNo}/report`, {
    headers: { Accept: 'text/html', Authorization: `Bearer ${session.token}` },
  });
  if (response.ok) await saveAs(response, `sale-${id}-batch-${batchNo}-report.html`);
}

/**
 * Generating priority codes: the count, then one CSV download (the server shows codes once).
 * `counts` is the sale's `priority_codes` (generated, redeemed, units paid).
 */
function codesForm(id, counts) {
  const summary = el('p', { id: 'codes-summary' }, counts ? `${counts.generated} generated, ${counts.redeemed} redeemed, ${counts.units_paid} units paid through them.` : '');
  const count = el('input', { type: 'number', name: 'count', min: 1, max: 10000, value: 10, inputmode: 'numeric', id: 'codes-count' });
  const error = el('p', { class: 'error', role: 'alert' });
  const form = el(
    'form',
    { id: 'codes', novalidate: true },
    summary,
    el('label', { for: 'codes-count' }, 'How many'),
    count,
    el('button', { type: 'submit' }, 'Generate and download CSV'),
    el('p', { class: 'hint' }, 'Each code admits one buyer without queueing. They are shown only in this download.'),
    error,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const response = await fetch(`/admin/sales/${id}/priority-codes`, {
      method: 'POST',
      headers: { Accept: 'text/csv', 'Content-Type': 'application/json', Authorization: `Bearer ${session.token}`, 'X-Actor': session.actor || 'admin' },
      body: JSON.stringify({ count: Number(count.value) }),
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      error.textContent = problem.detail || `HTTP ${response.status}`;
      return;
    }
    await saveAs(response, `sale-${id}-priority-codes.csv`);
  });
  return form;
}

async function salePage(id) {
  clearInterval(refresher);
  let sale = null;
  let version = null;
  const samples = [];
  const header = el('div');
  const stats = el('div', { class: 'grid', id: 'stats' });
  const charts = el('div', { id: 'charts' });
  const actionsBox = el('div', { class: 'actions' });
  const editBox = el('div');
  const conflictBox = el('div', { id: 'conflict' });
  const auditBox = el('div');
  const drawBox = el('div');
  const codesBox = el('div');
  const message = el('p', { class: 'error', role: 'alert' });
  view.replaceChildren(
    nav(),
    header,
    el('section', {}, el('h2', {}, 'Live'), stats, charts),
    el('section', {}, el('h2', {}, 'Actions'), actionsBox, message),
    el('section', {}, el('h2', {}, 'Change'), conflictBox, editBox),
    el('section', {}, el('h2', {}, 'Audit trail'), auditBox),
    el('section', {}, el('h2', {}, 'Draw'), drawBox),
    el('section', {}, el('h2', {}, 'Priority codes'), codesBox),
  );

  const loadAudit = async () => {
    const { body } = await admin(`/admin/sales/${id}/audit`);
    auditBox.replaceChildren(
      el(
        'table',
        { id: 'audit' },
        el('thead', {}, el('tr', {}, ['When', 'Who', 'What', 'Details'].map((h) => el('th', { scope: 'col' }, h)))),
        el('tbody', {}, body.entries.map((e) => el('tr', {}, el('td', {}, fmt(e.at)), el('td', {}, e.actor), el('td', {}, e.action), el('td', { class: 'details' }, JSON.stringify(e.details?.request ?? e.details, (_, v) => (v === null ? undefined : v)))))),
      ),
    );
    return body.entries;
  };

  const loadDraw = async () => {
    const batch = sale.current_batch;
    if (!batch) return drawBox.replaceChildren(el('p', {}, 'No batch.'));
    try {
      const { body } = await api(`/sales/${id}/batches/${batch.batch_no}/draw`);
      drawBox.replaceChildren(
        el('p', {}, `Batch ${batch.batch_no} seed commitment: `, el('code', {}, body.draw_commitment)),
        body.cohort_commitment
          ? el('p', {}, `Cohort of ${body.cohort_size} sealed ${fmt(body.sealed_at)}: `, el('code', {}, body.cohort_commitment))
          : el('p', { class: 'hint' }, 'The cohort is sealed and recorded at the opening.'),
        body.prequeue_seed
          ? el('p', {}, 'Seed: ', el('code', {}, body.prequeue_seed))
          : el('p', { class: 'hint' }, 'The seed is revealed once the cohort is recorded.'),
        el('p', { class: 'hint' }, `Order: ${body.rank}`),
        el('button', { type: 'button', id: 'report', onclick: () => downloadReport(id, batch.batch_no) }, `Download batch ${batch.batch_no}'s report`),
      );
    } catch (e) {
      drawBox.replaceChildren(el('p', { class: 'hint' }, e.message));
    }
  };

  const showSale = () => {
    const batch = sale.current_batch;
    header.replaceChildren(
      el('h1', {}, `#${sale.id} ${sale.name}`),
      el(
        'p',
        { class: 'facts' },
        el('span', { class: 'badge', 'data-status': batch?.status || 'ended' }, batch ? `${batch.status}${batch.paused ? ' (paused)' : ''}` : 'ended'),
        el('span', {}, `version ${sale.version}`),
        el('span', {}, `stock ${sale.stock} per batch, limit ${sale.per_user_limit}`),
        el('span', {}, batch ? `batch ${batch.batch_no} opens ${fmt(batch.opens_at)}` : ''),
      ),
    );
    const s = batch?.stats || {};
    const stat = (name, value) => el('div', { 'data-stat': name }, el('div', { class: 'hint' }, name), el('div', { class: 'stat' }, value ?? '—'));
    stats.replaceChildren(
      stat('available', s.available),
      stat('held for codes', s.allotted),
      stat('reserved', s.reserved),
      stat('sold', s.sold),
      stat('stock', s.stock),
      stat('queued', s.queued),
      stat('admitted', s.admitted),
      stat('reach', s.reach),
    );
    charts.replaceChildren(
      el('p', { class: 'hint' }, 'Units: available (green), reserved (orange), sold (red)'),
      chart(samples, [['available', '#137333', 'available'], ['reserved', '#e37400', 'reserved'], ['sold', '#c8102e', 'sold']]),
      el('p', { class: 'hint' }, 'Buyers: queued (blue), admitted (purple)'),
      chart(samples, [['queued', '#1a73e8', 'queued'], ['admitted', '#9334e6', 'admitted']]),
    );
  };

  const load = async () => {
    const { body, headers } = await admin(`/admin/sales/${id}`);
    sale = body;
    version = headers.get('ETag');
    const s = sale.current_batch?.stats;
    if (s) {
      samples.push({ ...s });
      if (samples.length > CHART_SAMPLES) samples.shift();
    }
    showSale();
  };

  const statusAction = (label, path, question) => {
    const button = el('button', { type: 'button', 'data-action': path }, label);
    button.addEventListener('click', async () => {
      if (!confirm(question)) return;
      const sent = version;
      try {
        await admin(`/admin/sales/${id}/${path}`, { method: 'POST', headers: { 'If-Match': sent } });
        say(`${label}: done`);
        message.textContent = '';
        await load();
        await loadAudit();
        // This operator's own change moved the version on: the edit form is drawn again from it
        // (another operator's change is what the form's version guards against).
        editBox.replaceChildren(editForm());
      } catch (e) {
        message.textContent = e.message;
        if (e.status === 412) showConflict(e, null, sent);
      }
    });
    return button;
  };

  /**
   * The view of a stale edit: what the operator tried, and who changed what since `readEtag` (the
   * version the operator's form or button was showing).
   */
  const showConflict = async (problem, attempted, readEtag) => {
    const readVersion = Number(String(readEtag).replace(/"/g, ''));
    await load();
    const current = version;
    const entries = await loadAudit();
    // Each change records the version it made (`details.request.version`; the creation made 1).
    const since = entries.filter((e) => (e.details?.request?.version ?? 1) > readVersion);
    const what = (e) => JSON.stringify(e.details?.request?.patch ?? {}, (_, v) => (v === null ? undefined : v));
    const changes = since.map((e) => el('li', {}, `${fmt(e.at)}: ${e.actor} ${e.action} ${e.action === 'sale.update' ? what(e) : ''}`));
    const retry = el('button', { type: 'button', class: 'primary' }, 'Apply my change to the current version');
    retry.addEventListener('click', () => submitPatch(attempted, current));
    conflictBox.replaceChildren(
      el(
        'div',
        { class: 'conflict', role: 'alert' },
        el('h3', {}, 'Someone changed this sale since you read it'),
        el('p', {}, `You edited version ${readVersion}; it is now version ${sale.version}. Nothing of yours was applied.`),
        el('ul', {}, changes),
        attempted ? el('p', {}, `Your change: ${JSON.stringify(attempted)}`) : null,
        attempted ? retry : null,
      ),
    );
    editBox.replaceChildren(editForm());
  };

  /** Sends `patch` guarded by `etag`: the version the operator edited, not the one polled since. */
  const submitPatch = async (patch, etag, form, general) => {
    try {
      await admin(`/admin/sales/${id}`, { method: 'PATCH', body: patch, headers: { 'If-Match': etag } });
      say('Change saved');
      conflictBox.replaceChildren();
      await load();
      await loadAudit();
      editBox.replaceChildren(editForm());
    } catch (e) {
      if (e.status === 412) return showConflict(e, patch, etag);
      if (form) showFieldErrors(form, e, general);
      else conflictBox.append(el('p', { class: 'error' }, e.message));
    }
  };

  // The form keeps the version it was drawn from: the live view refreshes every second, and an edit
  // typed against an older version must meet the conflict, not silently overwrite what changed.
  const editForm = () => {
    const etag = version;
    const drawn = sale;
    const number = (name, label, min) => field(name, label, el('input', { type: 'number', inputmode: 'numeric', min, value: drawn[name] ?? '' }));
    const general = el('p', { class: 'error', role: 'alert' });
    const form = el(
      'form',
      { id: 'edit-sale', novalidate: true },
      el('p', { class: 'hint' }, `Editing version ${sale.version}`),
      el(
        'div',
        { class: 'grid' },
        number('stock', 'Stock per batch', 1),
        number('per_user_limit', 'Limit per buyer', 1),
        number('admission_rate', 'Admissions per second', 1),
        number('payment_window_secs', 'Payment window (seconds)', 30),
        number('join_pow_bits', 'Proof of work per join (bits)', 0),
        number('priority_units', 'Units held for priority codes', 0),
        number('priority_hold_secs', 'Held for codes after the opening (seconds)', 60),
      ),
      el('button', { type: 'submit', class: 'primary' }, 'Save'),
      general,
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const patch = {};
      for (const name of ['stock', 'per_user_limit', 'admission_rate', 'payment_window_secs', 'join_pow_bits', 'priority_units', 'priority_hold_secs']) {
        const raw = form.querySelector(`[name="${name}"]`).value.trim();
        if (raw !== '' && Number(raw) !== drawn[name]) patch[name] = Number(raw);
      }
      if (Object.keys(patch).length === 0) {
        general.textContent = 'Nothing changed.';
        return;
      }
      submitPatch(patch, etag, form, general);
    });
    return form;
  };

  try {
    await load();
  } catch (e) {
    if (e.status === 401) return signIn();
    view.replaceChildren(nav(), el('p', { class: 'error', role: 'alert' }, e.message));
    return;
  }
  actionsBox.replaceChildren(
    statusAction('Pause', 'pause', 'Pause admission? Buyers keep their places.'),
    statusAction('Resume', 'resume', 'Resume admission?'),
    statusAction('Close', 'close', 'Close the sale? The current batch ends now and no later batch opens.'),
  );
  editBox.replaceChildren(editForm());
  codesBox.replaceChildren(codesForm(id, sale.priority_codes));
  await loadAudit();
  await loadDraw();
  every(1000, async () => {
    try {
      await load();
    } catch (e) {
      if (e.status === 401) signIn();
    }
  });
}

async function route() {
  if (!session.token) return signIn();
  const sale = location.hash.match(/^#\/sales\/(\d+)$/);
  try {
    if (sale) await salePage(Number(sale[1]));
    else if (location.hash === '#/new') await newSalePage();
    else await salesPage();
  } catch (e) {
    view.replaceChildren(nav(), el('p', { class: 'error', role: 'alert' }, e.message));
  }
}

window.addEventListener('hashchange', route);
route();
