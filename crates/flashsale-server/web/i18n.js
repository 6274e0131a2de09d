// The waiting room's words, in English and Simplified Chinese, chosen from the browser's
// languages (zh* → zh-CN, anything else → English). `?lang=en` or `?lang=zh-CN` overrides.

const messages = {
  en: {
    title: 'Flash sales',
    upcoming: 'Sales',
    none: 'No sale is scheduled right now.',
    loading: 'Loading…',
    back: '← All sales',
    price: 'Price',
    limit: 'Limit: {n} per buyer',
    status_scheduled: 'Coming soon',
    status_prequeue: 'Queue open',
    status_open: 'On sale',
    status_all_held: 'All in carts',
    status_paused: 'Paused',
    status_sold_out: 'Sold out',
    status_closed: 'Ended',
    prequeue_in: 'The queue opens in {t}',
    opens_in: 'The sale opens in {t}',
    opens_at: 'Opens {when}',
    units_left: '{n} left',
    sign_in: 'Sign in',
    sign_in_name: 'Your name',
    sign_in_dev: 'Development mode: any name signs you in.',
    sign_in_shop: 'Sign in through the shop to join the queue.',
    signed_in_as: 'Signed in as {name}',
    sign_out: 'Sign out',
    join: 'Join the queue',
    joining: 'Joining…',
    code_prompt: 'Have a priority code?',
    code_label: 'Priority code',
    code_use: 'Use the code',
    code_checking: 'Checking…',
    err_code_invalid: 'That is not a priority code for this sale. Check it and try again.',
    err_code_used: 'That priority code was already used.',
    st_prequeue: 'You are in the pre-queue. At the opening everyone in it gets a place drawn at random: arriving early gives no head start.',
    st_waiting: 'You are in line.',
    st_place: 'Place {n}',
    solving: 'Checking this device… (a few seconds)',
    st_receipt: 'Your draw receipt: {r}. Keep it: with your id it proves your drawn place (flashsale-verify).',
    st_ahead: '{n} ahead of you',
    st_eta: 'About {t}',
    st_no_eta: 'Waiting for units to come back',
    st_admitted: "It's your turn!",
    st_admitted_until: 'Order before {t}',
    st_expired: 'Your turn passed without an order.',
    st_paused: 'The sale is paused. You keep your place.',
    st_standby: 'Every unit is in a cart. {held} may come back if their buyers do not pay.',
    st_standby_place: 'You are {n} in line for a returned unit.',
    st_next_release: 'The first hold ends in {t}',
    st_sold_out: 'Sold out. Thank you for waiting.',
    st_closed: 'This sale has ended.',
    st_offline: 'Connection lost; trying again…',
    quantity: 'Quantity',
    order: 'Order now',
    ordering: 'Ordering…',
    order_placed: 'Order {id} is reserved for you.',
    order_title: 'Order {id}',
    pay_before: 'Pay within {t}',
    pay: 'Pay now (test)',
    paying: 'Paying…',
    pay_elsewhere: 'Continue to payment',
    cancel: 'Cancel order',
    cancel_confirm: 'Cancel this order? Its units go back to other buyers.',
    your_orders: 'Your orders',
    no_orders: 'No orders yet.',
    os_pending_payment: 'Awaiting payment',
    os_paid: 'Paid',
    os_cancelled: 'Cancelled',
    os_expired: 'Expired',
    os_payment_failed: 'Payment failed',
    os_refund_due: 'Refund due',
    err_sold_out: 'Sold out.',
    err_closed: 'This sale has ended.',
    err_not_open: 'The queue is not open yet.',
    err_rate_limited: 'Too many requests; retrying shortly.',
    err_generic: 'Something went wrong: {detail}',
    seconds: '{n} s',
    minutes: '{n} min',
  },
  'zh-CN': {
    title: '限时抢购',
    upcoming: '抢购活动',
    none: '目前没有安排中的抢购。',
    loading: '加载中…',
    back: '← 全部活动',
    price: '价格',
    limit: '每人限购 {n} 件',
    status_scheduled: '即将开始',
    status_prequeue: '排队已开放',
    status_open: '抢购中',
    status_all_held: '已全部加入购物车',
    status_paused: '已暂停',
    status_sold_out: '已售罄',
    status_closed: '已结束',
    prequeue_in: '距排队开放还有 {t}',
    opens_in: '距开售还有 {t}',
    opens_at: '开售时间 {when}',
    units_left: '剩余 {n} 件',
    sign_in: '登录',
    sign_in_name: '你的名字',
    sign_in_dev: '开发模式：输入任意名字即可登录。',
    sign_in_shop: '请通过商城登录后再排队。',
    signed_in_as: '已登录：{name}',
    sign_out: '退出',
    join: '加入排队',
    joining: '正在加入…',
    code_prompt: '有优先码？',
    code_label: '优先码',
    code_use: '使用优先码',
    code_checking: '正在核对…',
    err_code_invalid: '这不是本场活动的优先码，请检查后重试。',
    err_code_used: '该优先码已被使用。',
    st_prequeue: '你已进入预排队。开售时所有预排队的人将随机抽取顺序：早到不会占先。',
    st_waiting: '你正在排队。',
    st_place: '第 {n} 位',
    solving: '正在验证本设备…（几秒钟）',
    st_receipt: '你的抽签凭据：{r}。请保存：凭它和你的账号可核验抽签名次（flashsale-verify）。',
    st_ahead: '前面还有 {n} 人',
    st_eta: '约 {t}',
    st_no_eta: '正在等待商品退回',
    st_admitted: '轮到你了！',
    st_admitted_until: '请在 {t} 内下单',
    st_expired: '你的下单时间已过。',
    st_paused: '抢购已暂停，你的位置会保留。',
    st_standby: '所有商品都已在购物车中。若买家未付款，{held} 件可能退回。',
    st_standby_place: '你在退回商品的候补队列中排第 {n} 位。',
    st_next_release: '最早的保留将在 {t} 后结束',
    st_sold_out: '已售罄，感谢你的等待。',
    st_closed: '本次抢购已结束。',
    st_offline: '连接中断，正在重试…',
    quantity: '数量',
    order: '立即下单',
    ordering: '正在下单…',
    order_placed: '订单 {id} 已为你保留。',
    order_title: '订单 {id}',
    pay_before: '请在 {t} 内付款',
    pay: '立即付款（测试）',
    paying: '正在付款…',
    pay_elsewhere: '前往付款',
    cancel: '取消订单',
    cancel_confirm: '确定取消此订单？商品将退回给其他买家。',
    your_orders: '我的订单',
    no_orders: '还没有订单。',
    os_pending_payment: '待付款',
    os_paid: '已付款',
    os_cancelled: '已取消',
    os_expired: '已过期',
    os_payment_failed: '付款失败',
    os_refund_due: '待退款',
    err_sold_out: '已售罄。',
    err_closed: '本次抢购已结束。',
    err_not_open: '排队尚未开放。',
    err_rate_limited: '请求过于频繁，稍后自动重试。',
    err_generic: '出错了：{detail}',
    seconds: '{n} 秒',
    minutes: '{n} 分钟',
  },
};

function pick() {
  const forced = new URLSearchParams(location.search).get('lang');
  if (forced && messages[forced]) return forced;
  for (const lang of navigator.languages || [navigator.language || 'en']) {
    if (lang.toLowerCase().startsWith('zh')) return 'zh-CN';
    if (lang.toLowerCase().startsWith('en')) return 'en';
  }
  return 'en';
}

export const lang = pick();

/** The message `key` in the page's language, with `{name}` replaced from `vars`. */
export function t(key, vars = {}) {
  const text = messages[lang][key] ?? messages.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

/** A duration in words: seconds under two minutes, minutes above. */
export function duration(secs) {
  return secs < 120 ? t('seconds', { n: Math.max(1, Math.round(secs)) }) : t('minutes', { n: Math.round(secs / 60) });
}

/** A price given in the currency's minor unit (fen, cents; yen have none), in the page's language. */
export function money(cents, currency) {
  try {
    const format = new Intl.NumberFormat(lang, { style: 'currency', currency });
    return format.format(cents / 10 ** format.resolvedOptions().maximumFractionDigits);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

/** A moment in the page's language, in the device's time zone. */
export function when(iso) {
  return new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(iso));
}
