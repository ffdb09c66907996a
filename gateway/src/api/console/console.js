// Duty console for property management (物业值班台). Plain ES module, no framework, no
// bundler, no external fetches: it is served by the gateway on the estate LAN.
//
// Data flow: one initial load through the GET endpoints (the code labels from /api/codes
// once), then live updates from `EventSource('/api/stream')`: events `alert`, `device`, `roll_call` (the city's 查岗:
// shown at once, loud, with a countdown), `status` (every second), and `resync` (this
// client fell behind). After a reconnect or a resync the lists are loaded
// again, so changes missed meanwhile show up. Rows are keyed by id and updated in place;
// only rows whose position changed move.
//
// Language: both (Chinese, then English: the default), zh or en, picked in the header
// and kept in localStorage; `tr()` gives a label in it, and static text in index.html is
// marked lang="zh-CN" / lang="en" for console.css to show. Sound: see "Sound" below.
//
// Sign-in (issue 16): GET /api/session says who is signed in (a cookie the page never
// sees) and the CSRF token every write sends in X-CSRF-Token; the header's form signs in
// with an account (POST /api/session), 退出 Sign out ends it (DELETE). Action buttons show
// only for an operator or admin; when reading needs a sign-in the page shows only the form.
//
// Test hooks (read by tests/console): <body data-ready="1"> once loaded and live,
// data-signed-in (the account's name, empty when nobody), data-role,
// data-sound (the AudioContext's state: suspended, running, …), data-read-only,
// data-alert-beeps (sounds played for new critical alerts),
// data-roll-call-beeps (sounds played for waiting roll calls), data-flood (1 in a
// flood); each alert row has
// data-alert-id, data-status and data-severity; each roll call data-roll-call-id and
// data-status (pending, answered, missed).

/** What the page kept before accounts (a shared token and a typed name): removed at start. */
const OLD_KEYS = ['estate.console.token', 'estate.console.operator'];
const LANG_KEY = 'estate.console.lang';
const STALE_STREAM_MS = 10000; // status arrives every second; silence this long = dead link
const REMINDER_MS = 30000; // repeat the cue while a critical alert is unacknowledged
const ROLL_CALL_CUE_MS = 5000; // repeat the cue this often while a roll call waits
const ANSWERED_SHOWN_MS = 15000; // an answered roll call stays on screen this long
const MISSED_SHOWN_MS = 12 * 3600 * 1000; // missed ones older than this are not shown after a reload

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------
// Language and labels (中文 first, English after, or one of them)
// ---------------------------------------------------------------------------------------

const LANGS = { both: 'zh-CN', zh: 'zh-CN', en: 'en' }; // choice → <html lang>
let lang = 'both';

/** A label in the chosen language: `zh en` for both (or `both` when given), else one. */
function tr(zh, en, both = `${zh} ${en}`) {
  return lang === 'zh' ? zh : lang === 'en' ? en : both;
}

/** A [zh, en] pair of the tables below in the chosen language; `fallback` if none. */
function label(pair, fallback) {
  return pair ? tr(pair[0], pair[1]) : fallback;
}

const SEVERITY = {
  1: ['紧急', 'Critical'],
  2: ['重要', 'Major'],
  3: ['一般', 'Minor'],
  4: ['提示', 'Info'],
};

const STATUS = {
  active: ['未确认', 'Active'],
  acknowledged: ['已确认', 'Acknowledged'],
  closed: ['已关闭', 'Closed'],
};

const DISPOSITION = {
  real: ['真实警情', 'Real'],
  false_alarm: ['误报', 'False alarm'],
  test: ['测试', 'Test'],
  maintenance: ['维护', 'Maintenance'],
  auto_cleared: ['自动恢复', 'Auto-cleared'],
};

const KIND = {
  access_control: ['门禁', 'Access control'],
  smoke: ['烟感', 'Smoke detector'],
  water_leak: ['漏水', 'Water leak'],
  gas: ['燃气', 'Gas detector'],
  camera: ['摄像机', 'Camera'],
  fire_panel: ['消防主机', 'Fire panel'],
  manual_call_point: ['手报', 'Manual call point'],
  elevator: ['电梯', 'Elevator'],
  emergency_button: ['一键报警', 'Emergency button'],
  valve: ['阀门', 'Valve'],
  sounder: ['声光报警器', 'Sounder'],
  gateway: ['网关', 'Gateway'],
};

/** Attributes index.html cannot mark per language: [selector, attribute, zh, en]. */
const ATTR_LABELS = [
  ['#backlog', 'title', '待上传（告警 / 事件）', 'Backlog (alarms / events)'],
  ['.rate', 'title', '事件速率，最近 60 秒', 'Event rate, last 60 s'],
  ['#rate-chart', 'aria-label', '事件速率', 'Event rate'],
  ['#operator-input', 'placeholder', '账号', 'account'],
  ['#password-input', 'placeholder', '密码', 'password'],
];

/** Applies a language choice (both, zh, en): the page's own text, then every row. */
function setLanguage(choice) {
  lang = Object.hasOwn(LANGS, choice) ? choice : 'both';
  const root = document.documentElement;
  root.lang = LANGS[lang];
  root.dataset.lang = lang;
  $('lang').value = lang;
  document.title = `${tr('值班台', 'Duty console')} · estate-gateway`;
  for (const [sel, attr, zh, en] of ATTR_LABELS) {
    for (const el of document.querySelectorAll(sel)) el.setAttribute(attr, tr(zh, en));
  }
}

/** The operator picked a language: kept for the next load, shown at once. */
function chooseLanguage(choice) {
  localStorage.setItem(LANG_KEY, choice);
  setLanguage(choice);
  renderSound();
  if (state.status) applyStatus(state.status);
  setLive(liveUp);
  renderRollCalls();
  scheduleRender();
}

// The Chinese label of every event code, from `GET /api/codes` (the gateway's taxonomy,
// protocols/src/taxonomy.rs): read once at start, before the first render. Without it
// (an older gateway, a failed request) alerts show their English title and code.
const codeZh = new Map();
let codesLoaded = null;

function loadCodes() {
  if (!codesLoaded) {
    codesLoaded = getJson('/api/codes')
      .then((codes) => {
        for (const c of codes) if (c.title_zh) codeZh.set(c.code, c.title_zh);
      })
      .catch(() => {
        codesLoaded = null; // try again with the next load of the lists
      });
  }
  return codesLoaded;
}

const CITY_STATE = {
  received: ['已接警', 'Received'],
  dispatched: ['已派警', 'Dispatched'],
  on_scene: ['已到场', 'On scene'],
  closed: ['已结案', 'Closed'],
};

const DEVICE_STATUS = {
  online: ['在线', 'Online'],
  offline: ['离线', 'Offline'],
  unknown: ['未知', 'Unknown'],
};

const RESULT = {
  ok: ['成功', 'done'],
  done: ['成功', 'done'],
  failed: ['失败', 'failed'],
  error: ['失败', 'failed'],
  pending: ['进行中', 'pending'],
};

const isDigits = (s) => /^[0-9]+$/.test(s);

/** "3号楼 2单元 5层 501 / Bldg 3 Unit 2 Fl 5 Rm 501" */
export function placeText(loc) {
  const l = loc || {};
  const zh = [];
  const en = [];
  if (l.building) {
    zh.push(isDigits(l.building) ? `${l.building}号楼` : l.building);
    en.push(`Bldg ${l.building}`);
  }
  if (l.unit) {
    zh.push(isDigits(l.unit) ? `${l.unit}单元` : l.unit);
    en.push(`Unit ${l.unit}`);
  }
  if (l.floor) {
    zh.push(`${l.floor}层`);
    en.push(`Fl ${l.floor}`);
  }
  if (l.room) {
    zh.push(l.room);
    en.push(`Rm ${l.room}`);
  }
  if (l.zone) {
    zh.push(isDigits(l.zone) ? `${l.zone}区` : l.zone);
    en.push(`Zone ${l.zone}`);
  }
  if (zh.length === 0) return tr('位置未知', 'Location unknown', '位置未知 / Location unknown');
  return tr(zh.join(' '), en.join(' '), `${zh.join(' ')} / ${en.join(' ')}`);
}

/** "3 min ago / 3分钟前" (English first: the number leads) */
export function ageText(ms, now) {
  const both = (zh, en) => tr(zh, en, `${en} / ${zh}`);
  if (ms == null) return both('从未', 'never');
  const s = Math.max(0, Math.floor((now - ms) / 1000));
  if (s < 60) return both(`${s}秒前`, `${s} s ago`);
  const m = Math.floor(s / 60);
  if (m < 60) return both(`${m}分钟前`, `${m} min ago`);
  const h = Math.floor(m / 60);
  if (h < 48) return both(`${h}小时前`, `${h} h ago`);
  const d = Math.floor(h / 24);
  return both(`${d}天前`, `${d} d ago`);
}

function clockText(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A linkage write (`rule: coil 0 = 1` on a valve) in words where the target is known. */
function actionText(x) {
  const target = state.devices.get(x.target);
  const m = /coil \d+ = ([01])$/.exec(x.action || '');
  if (target && m) {
    const on = m[1] === '1';
    if (target.kind === 'valve') return `${on ? tr('关阀', 'Close valve') : tr('开阀', 'Open valve')} (${x.action})`;
    if (target.kind === 'sounder') return `${on ? tr('启动声光报警', 'Sounder on') : tr('停止声光报警', 'Sounder off')} (${x.action})`;
  }
  return x.action;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function setAttr(el, name, value) {
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

const ROLE = {
  viewer: ['查看员', 'viewer'],
  operator: ['值班员', 'operator'],
  admin: ['管理员', 'admin'],
};

const state = {
  readOnly: true, // until /api/status says otherwise: never offer actions we cannot do
  /** GET /api/session: {signed_in, name, role, csrf_token, can_read, read_only} */
  session: { signed_in: false },
  status: null,
  /** id → Alert (open ones only: closed alerts leave the list) */
  alerts: new Map(),
  /** id → { li, el: {…} } */
  alertRows: new Map(),
  devices: new Map(),
  deviceRows: new Map(),
  /** ids changed by the stream while a list load was in flight (the stream wins) */
  touchedAlerts: new Set(),
  touchedDevices: new Set(),
  loaded: false,
  audio: null,
  /** the operator turned sound off with the header button (no tap turns it on by itself) */
  soundMuted: false,
  alertBeeps: 0,
  lastCue: 0,
  closing: null, // alert id the close dialog is for
  shelving: null, // alert id the shelve dialog is for
  flood: false, // /api/status says flood: alerts grouped by building and kind
  /** ids that arrived after the first load: their rows flash once */
  fresh: new Set(),
  /** roll-call id → { rc, deadline (local ms), row, dismissed, answeredAt } */
  rollCalls: new Map(),
  rollCallBeeps: 0,
  lastRollCallCue: 0,
};

function signedIn() {
  return Boolean(state.session && state.session.signed_in);
}

function userName() {
  return signedIn() ? state.session.name : '';
}

/** Signed in with a role that may act, on a gateway that is not read-only. */
function canAct() {
  return !state.readOnly && signedIn() && (state.session.role === 'operator' || state.session.role === 'admin');
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

let messageTimer = 0;
function clearMessage() {
  clearTimeout(messageTimer);
  $('message').hidden = true;
}

function showMessage(text, kind = 'error') {
  const el = $('message');
  el.textContent = text;
  el.className = `message ${kind}`;
  el.hidden = false;
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => { el.hidden = true; }, kind === 'error' ? 15000 : 6000);
}

// ---------------------------------------------------------------------------------------
// Sound (WebAudio). Browsers keep audio blocked until a user gesture on the page: the
// AudioContext made at start stays 'suspended' until then. While it is not 'running'
// (blocked, suspended again by the browser, or turned off here) the banner says so; a tap
// on it turns sound on, and so does the first tap or key anywhere on the page unless the
// operator turned sound off. The context's `statechange` shows or hides the banner.
// ---------------------------------------------------------------------------------------

function soundOn() {
  return Boolean(state.audio && state.audio.state === 'running');
}

function beep() {
  const ctx = state.audio;
  if (!soundOn()) return false;
  const t0 = ctx.currentTime + 0.02;
  for (let i = 0; i < 3; i++) {
    const t = t0 + i * 0.28;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'square';
    osc.frequency.value = i % 2 ? 660 : 880;
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.25, t + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.22);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t);
    osc.stop(t + 0.24);
  }
  return true;
}

function alertCue() {
  if (beep()) {
    state.alertBeeps += 1;
    document.body.dataset.alertBeeps = String(state.alertBeeps);
  }
  state.lastCue = Date.now();
}

/** The banner and the header button follow the context's state. */
function renderSound() {
  const on = soundOn();
  $('sound-banner').hidden = on;
  document.body.dataset.sound = state.audio ? state.audio.state : 'unavailable';
  const btn = $('sound-btn');
  setAttr(btn, 'aria-pressed', on ? 'true' : 'false');
  setText(btn, on ? tr('声音已开', 'Sound on') : tr('启用声音', 'Enable sound'));
}

function makeAudio() {
  if (state.audio) return;
  state.audio = new AudioContext();
  state.audio.addEventListener('statechange', renderSound);
}

/** Turns sound on (within a user gesture, or the browser refuses); `quiet`: no test beep. */
async function enableSound({ quiet = false } = {}) {
  state.soundMuted = false;
  try {
    makeAudio();
    await state.audio.resume();
  } catch (e) {
    showMessage(`${tr('无法播放声音', 'Sound unavailable')}: ${e}`);
  }
  renderSound();
  if (!quiet) beep(); // let the operator hear what a critical alert sounds like
}

/** The header button: sound off while it is on, else on. */
async function toggleSound() {
  if (soundOn()) {
    state.soundMuted = true;
    await state.audio.suspend();
    renderSound();
  } else {
    await enableSound();
  }
}

function startSound() {
  try {
    makeAudio(); // suspended until a gesture where the browser blocks autoplay
  } catch { /* no WebAudio: the banner stays, a tap reports why */ }
  $('sound-btn').addEventListener('click', toggleSound);
  $('sound-banner').addEventListener('click', () => enableSound());
  // Any first tap or key on the page is a gesture too (the two buttons handle their own).
  const wake = (ev) => {
    if (soundOn() || state.soundMuted || (ev.target instanceof Element && ev.target.closest('#sound-btn, #sound-banner'))) return;
    enableSound({ quiet: true });
  };
  document.addEventListener('pointerdown', wake, true);
  document.addEventListener('keydown', wake, true);
  renderSound();
}

function remindCritical() {
  if (Date.now() - state.lastCue < REMINDER_MS) return;
  for (const a of state.alerts.values()) {
    if (a.severity === 1 && a.status === 'active' && !a.shelved) {
      alertCue();
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------

/** Flood mode's group of an alert: its building and kind (code). */
function floodGroup(a) {
  return `${a.severity}|${(a.location && a.location.building) || ''}|${a.code}`;
}

function alertOrder(a, b) {
  // Issue 16: in a flood (/api/status "flood"), severity first (life safety on top), then
  // grouped by building and kind.
  if (state.flood) {
    const ga = floodGroup(a);
    const gb = floodGroup(b);
    if (ga !== gb && a.severity === b.severity) return ga < gb ? -1 : 1;
  }
  return a.severity - b.severity || a.first_seen_ms - b.first_seen_ms || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Applies one Alert from the stream, a list load or an action's answer. */
function upsertAlert(a, { live }) {
  const known = state.alerts.has(a.id);
  if (a.status === 'closed') {
    state.alerts.delete(a.id);
  } else {
    state.alerts.set(a.id, a);
    if (!known && state.loaded) state.fresh.add(a.id);
    if (!known && state.loaded && live && a.severity === 1 && a.status === 'active') alertCue();
  }
  scheduleRender();
  return !known;
}

function makeAlertRow(id) {
  const li = $('alert-tpl').content.firstElementChild.cloneNode(true);
  li.dataset.alertId = id;
  const q = (sel) => li.querySelector(sel);
  const el = {
    sev: q('.sev'), title: q('.title'), code: q('.code'), repeat: q('.repeat'),
    cleared: q('.cleared'), escalated: q('.escalated'), chattering: q('.chattering'), shelved: q('.shelved'), shelf: q('.shelf'), unstored: q('.unstored'), state: q('.state'),
    where: q('.where'), device: q('.device'), age: q('.age'), handled: q('.handled'), city: q('.city'),
    actions: q('.actions'), ops: q('.ops'), ack: q('.ack'), close: q('.close'), shelve: q('.shelve'),
  };
  el.ack.addEventListener('click', () => acknowledge(id));
  el.close.addEventListener('click', () => openCloseDialog(id));
  el.shelve.addEventListener('click', () => toggleShelf(id));
  const row = { li, el, actionsKey: '', fresh: false };
  // The flash runs once; then the row is plain again (no layer kept for it).
  li.addEventListener('animationend', () => {
    row.fresh = false;
    li.classList.remove('new');
  });
  return row;
}

function renderAlertRow(row, a, now) {
  const { li, el } = row;
  setAttr(li, 'data-status', a.status);
  setAttr(li, 'data-severity', String(a.severity));
  setAttr(li, 'class', `alert sev${a.severity}${row.fresh ? ' new' : ''}${a.shelved ? ' shelved' : ''}`);
  setText(el.sev, label(SEVERITY[a.severity], `${a.severity}`));
  const zh = codeZh.get(a.code);
  setText(el.title, zh && a.title && zh !== a.title ? tr(zh, a.title) : (zh || a.title || a.code));
  setText(el.code, a.code);
  el.repeat.hidden = !(a.count > 1);
  setText(el.repeat, `×${a.count} ${tr(`重复${a.count}次`, `· ${a.count} times`, `重复${a.count}次 · ${a.count} times`)}`);
  el.cleared.hidden = !a.cleared;
  el.escalated.hidden = !a.escalated;
  el.chattering.hidden = !a.chattering; // issue 16: one quiet alert with its activation count
  setText(el.chattering, `${tr('频繁报警', 'Chattering')} ×${a.activations}`);
  el.shelved.hidden = el.shelf.hidden = !a.shelved; // greyed, no sound, with who/why/until
  if (a.shelved) setText(el.shelf, `${tr('搁置', 'Shelved')}: ${a.shelved.by} · ${a.shelved.reason} · ${tr('至', 'until')} ${clockText(a.shelved.until_ms)}`);
  setText(el.shelve, a.shelved ? tr('取消搁置', 'Unshelve') : tr('搁置', 'Shelve'));
  // Opened while the disk was full (docs/never-lost.md, "Full disk"); older alerts have no field.
  el.unstored.hidden = a.stored !== false;
  setText(el.state, label(STATUS[a.status], a.status));
  setAttr(el.state, 'data-status', a.status);
  setText(el.where, placeText(a.location));
  const kind = label(KIND[a.device_kind], a.device_kind || '');
  const name = a.device_name && a.device_name !== a.device_id ? `${a.device_name} (${a.device_id})` : a.device_id;
  setText(el.device, `${kind} ${name}`.trim());
  setText(el.age, `${ageText(a.first_seen_ms, now)}${a.count > 1 ? ` · ${tr('最近', 'last')} ${ageText(a.last_seen_ms, now)}` : ''}`);
  let handled = '';
  if (a.acknowledged) {
    handled = `${tr('已确认', 'Acknowledged')}: ${a.acknowledged.by} · ${clockText(a.acknowledged.at_ms)}`;
    if (a.acknowledged.note) handled += ` · ${a.acknowledged.note}`;
  }
  setText(el.handled, handled);
  // The city platform's handling (issue 14): received, dispatched, on scene, closed.
  el.city.hidden = !a.city;
  if (a.city) {
    let city = `${tr('市级平台', 'City')}: ${label(CITY_STATE[a.city.state], a.city.state)}`;
    if (a.city.note) city += ` · ${a.city.note}`;
    city += ` · ${a.city.by} · ${clockText(a.city.at_ms)}`;
    setText(el.city, city);
  }
  const actions = a.actions || [];
  const key = `${lang}${JSON.stringify(actions)}`; // a new language redraws them too
  if (key !== row.actionsKey) {
    row.actionsKey = key;
    el.actions.replaceChildren(...actions.map((x) => {
      const item = document.createElement('li');
      const what = actionText(x);
      const result = label(RESULT[x.result], x.result || '');
      item.textContent = `${tr('联动', 'Action')}: ${what}${x.target ? ` → ${x.target}` : ''}${result ? ` · ${result}` : ''} · ${clockText(x.at_ms)}`;
      return item;
    }));
  }
  el.ops.hidden = !canAct();
  el.ack.hidden = a.status !== 'active';
}

function renderAlerts() {
  const now = Date.now();
  const list = $('alerts');
  const sorted = [...state.alerts.values()].sort(alertOrder);
  const keep = new Set(sorted.map((a) => a.id));
  for (const [id, row] of state.alertRows) {
    if (!keep.has(id)) {
      row.li.remove();
      state.alertRows.delete(id);
      state.fresh.delete(id);
    }
  }
  let cursor = list.firstElementChild;
  let prevGroup = '';
  for (const a of sorted) {
    let row = state.alertRows.get(a.id);
    if (!row) {
      row = makeAlertRow(a.id);
      row.fresh = state.fresh.delete(a.id);
      state.alertRows.set(a.id, row);
    }
    renderAlertRow(row, a, now);
    const group = state.flood ? floodGroup(a) : '';
    row.li.classList.toggle('group-start', Boolean(group) && group !== prevGroup);
    prevGroup = group;
    if (row.li !== cursor) list.insertBefore(row.li, cursor);
    else cursor = cursor.nextElementSibling;
  }
  setText($('alert-count'), String(sorted.length));
  $('no-alerts').hidden = sorted.length > 0;
}

// ---------------------------------------------------------------------------------------
// Roll calls (查岗): the city asks whether anyone is on duty
// ---------------------------------------------------------------------------------------

function rollCallCue() {
  if (beep()) {
    state.rollCallBeeps += 1;
    document.body.dataset.rollCallBeeps = String(state.rollCallBeeps);
  }
  state.lastRollCallCue = Date.now();
}

/** Applies one roll call from the stream, a list load or an answer. */
function upsertRollCall(rc, { live }) {
  let entry = state.rollCalls.get(rc.id);
  if (!entry) {
    // After a reload: a missed call is still news for the desk; an answered one is not.
    const old = !live && rc.status !== 'pending';
    entry = {
      rc,
      row: null,
      dismissed: old && (rc.status === 'answered' || Date.now() - rc.deadline_ms > MISSED_SHOWN_MS),
      answeredAt: 0,
    };
    state.rollCalls.set(rc.id, entry);
    if (rc.status === 'pending') rollCallCue();
  }
  entry.rc = rc;
  // Counted down from what the gateway says is left, whatever this tablet's clock says.
  if (rc.status === 'pending') entry.deadline = Date.now() + rc.remaining_ms;
  if (rc.status === 'answered' && !entry.answeredAt) entry.answeredAt = Date.now();
  renderRollCalls();
}

function countdownText(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const p = (n) => String(n).padStart(2, '0');
  const left = `${p(Math.floor(s / 60))}:${p(s % 60)}`;
  return tr(`剩余 ${left}`, `${left} left`, `剩余 ${left} left`);
}

function makeRollCallRow(id) {
  const div = $('roll-call-tpl').content.firstElementChild.cloneNode(true);
  div.dataset.rollCallId = id;
  const q = (sel) => div.querySelector(sel);
  const el = {
    from: q('.rc-from'), countdown: q('.rc-countdown'), message: q('.rc-message'),
    form: q('.rc-answer'), as: q('.rc-as'),
    btn: q('.rc-btn'), result: q('.rc-result'), dismiss: q('.rc-dismiss'),
  };
  el.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    answerRollCall(id);
  });
  el.dismiss.addEventListener('click', () => {
    const entry = state.rollCalls.get(id);
    if (entry) entry.dismissed = true;
    renderRollCalls();
  });
  return { div, el };
}

function renderRollCalls() {
  const now = Date.now();
  const box = $('roll-calls');
  let shown = 0;
  let pending = 0;
  for (const [id, entry] of state.rollCalls) {
    const { rc } = entry;
    if (rc.status === 'answered' && entry.answeredAt && now - entry.answeredAt > ANSWERED_SHOWN_MS) entry.dismissed = true;
    if (entry.dismissed) {
      if (entry.row) entry.row.div.remove();
      entry.row = null;
      if (rc.status !== 'pending') state.rollCalls.delete(id);
      continue;
    }
    if (!entry.row) {
      entry.row = makeRollCallRow(id);
      box.append(entry.row.div);
    }
    shown += 1;
    const { div, el } = entry.row;
    setAttr(div, 'data-status', rc.status);
    setText(el.from, `${tr('来自', 'from')} ${rc.issuer} · ${clockText(rc.received_ms)}`);
    setText(el.message, rc.message || tr('请值班人员应答', 'The person on duty, please answer', '请值班人员应答 · The person on duty, please answer'));
    const waiting = rc.status === 'pending';
    if (waiting) pending += 1;
    el.form.hidden = !waiting;
    el.dismiss.hidden = rc.status !== 'missed';
    el.countdown.hidden = !waiting;
    if (waiting) setText(el.countdown, countdownText(entry.deadline - now));
    el.btn.disabled = !canAct();
    setText(el.as, canAct() ? `${tr('应答人', 'as')} ${userName()}` : '');
    if (rc.status === 'answered') {
      const after = Math.round((rc.answer_after_ms || 0) / 1000);
      setText(el.result, `${tr('已应答', 'Answered')}: ${rc.answered_by} · ${tr(`用时 ${after} 秒`, `after ${after} s`, `用时 after ${after} s`)}`);
    } else if (rc.status === 'missed') {
      const at = clockText(rc.deadline_ms);
      setText(el.result, tr(
        `未应答 — 截止 ${at}；市级平台已收到“无人应答”`,
        `Missed — deadline ${at}; the city was told nobody answered`,
        `未应答 Missed — 截止 deadline ${at}；市级平台已收到“无人应答” · the city was told nobody answered`,
      ));
    } else {
      let why = '';
      if (state.readOnly) why = tr('只读：此处无法应答', 'Read-only: cannot answer here', '只读：此处无法应答 · read-only: cannot answer here');
      else if (!signedIn()) why = tr('请先登录再应答', 'Sign in to answer', '请先登录再应答 · sign in to answer');
      else if (!canAct()) why = tr('此账号不能应答', 'This account may not answer', '此账号不能应答 · this account may not answer');
      setText(el.result, why);
    }
  }
  box.hidden = shown === 0;
  document.body.classList.toggle('roll-call-pending', pending > 0);
}

/** Once a second while a roll call waits: the countdown, and the cue every few seconds. */
function tickRollCalls() {
  let pending = false;
  for (const entry of state.rollCalls.values()) if (entry.rc.status === 'pending') pending = true;
  if (pending && Date.now() - state.lastRollCallCue >= ROLL_CALL_CUE_MS) rollCallCue();
  if (state.rollCalls.size) renderRollCalls();
}

async function answerRollCall(id) {
  const entry = state.rollCalls.get(id);
  if (!entry || !entry.row) return;
  const { el } = entry.row;
  el.btn.disabled = true;
  const r = await post(`/api/roll-calls/${encodeURIComponent(id)}/answer`, {}, {
    notFound: tr('查岗不存在', 'Roll call not found'),
    conflict: tr('查岗已结束', 'The roll call has already ended'),
  });
  el.btn.disabled = !canAct();
  if (r) upsertRollCall(r, { live: true });
}

// ---------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------

const DEVICE_RANK = { offline: 0, unknown: 1, online: 2 };

function deviceOrder(a, b) {
  return (DEVICE_RANK[a.status] ?? 1) - (DEVICE_RANK[b.status] ?? 1) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function upsertDevice(d) {
  state.devices.set(d.id, d);
  scheduleRender();
}

function renderDevices() {
  const now = Date.now();
  const list = $('devices');
  const sorted = [...state.devices.values()].sort(deviceOrder);
  const keep = new Set(sorted.map((d) => d.id));
  for (const [id, row] of state.deviceRows) {
    if (!keep.has(id)) {
      row.li.remove();
      state.deviceRows.delete(id);
    }
  }
  let cursor = list.firstElementChild;
  let offline = 0;
  for (const d of sorted) {
    if (d.status === 'offline') offline += 1;
    let row = state.deviceRows.get(d.id);
    if (!row) {
      const li = $('device-tpl').content.firstElementChild.cloneNode(true);
      li.dataset.deviceId = d.id;
      const q = (sel) => li.querySelector(sel);
      row = { li, el: { name: q('.name'), kind: q('.kind'), where: q('.where'), seen: q('.seen') } };
      state.deviceRows.set(d.id, row);
    }
    const { li, el } = row;
    setAttr(li, 'data-status', d.status);
    setText(el.name, d.name && d.name !== d.id ? `${d.name} (${d.id})` : d.id);
    const kind = label(KIND[d.kind], d.kind || tr('未知类型', 'Unknown kind'));
    const unregistered = d.registered === false ? ` · ${tr('未登记', 'unregistered')}` : '';
    setText(el.kind, `${kind} · ${label(DEVICE_STATUS[d.status], d.status)}${unregistered}`);
    setText(el.where, placeText(d.location));
    setText(el.seen, `${tr('最近通信', 'Last seen')}: ${ageText(d.last_seen_ms, now)}`);
    if (li !== cursor) list.insertBefore(li, cursor);
    else cursor = cursor.nextElementSibling;
  }
  setText($('device-count'), String(sorted.length));
  const off = $('offline-count');
  off.hidden = offline === 0;
  setText(off, `${tr('离线', 'offline')} ${offline}`);
  // Also at the top: on a portrait tablet the device list is below the alerts.
  const pillEl = $('offline-pill');
  pillEl.hidden = offline === 0;
  setText(pillEl, `${tr('离线设备', 'Offline devices')}: ${offline}`);
}

// ---------------------------------------------------------------------------------------
// Status: links, backlog, event-rate chart, read-only mode
// ---------------------------------------------------------------------------------------

function pill(el, up, zh, en) {
  setAttr(el, 'data-state', up ? 'up' : 'down');
  setText(el, `${tr(zh, en)}: ${up ? tr('已连接', 'connected') : tr('断开', 'down')}`);
}

function applyStatus(s) {
  state.status = s;
  setText($('estate-id'), `${tr('小区', 'Estate')} ${s.estate_id}`);
  setText($('gateway-id'), `${tr('网关', 'Gateway')} ${s.gateway_id}`);
  pill($('ingest'), s.ingest_connected, '采集', 'Ingest');
  pill($('uplink'), s.uplink_connected, '上行', 'Uplink');
  const b = s.backlog || { alarms: 0, events: 0 };
  const backlog = $('backlog');
  setAttr(backlog, 'data-state', b.alarms > 0 ? 'down' : b.events > 0 ? 'busy' : 'up');
  setText(backlog, `${tr('积压', 'Backlog')}: ${tr('告警', 'alarms')} ${b.alarms} · ${tr('事件', 'events')} ${b.events}`);
  const rates = Array.isArray(s.events_per_sec) ? s.events_per_sec : [];
  const max = Math.max(1, ...rates);
  const step = rates.length > 1 ? 120 / (rates.length - 1) : 0;
  const points = rates.map((v, i) => `${(i * step).toFixed(1)},${(31 - (v / max) * 30).toFixed(1)}`).join(' ');
  setAttr($('rate-line'), 'points', points);
  const last = rates.length ? rates[rates.length - 1] : 0;
  setText($('rate-now'), String(Math.round(last)));
  setText($('rate-max'), String(Math.round(Math.max(0, ...rates))));
  setReadOnly(Boolean(s.read_only));
  const f = s.flood || {};
  if (Boolean(f.active) !== state.flood) {
    state.flood = Boolean(f.active);
    document.body.dataset.flood = state.flood ? '1' : '0';
    scheduleRender();
  }
  $('flood').hidden = !state.flood;
  if (state.flood) {
    const min = Math.round((f.window_ms || 0) / 60000);
    setText($('flood'), tr(
      `报警泛滥：${min} 分钟内 ${f.new_alerts} 条新告警 — 按楼栋和类型分组，生命安全优先`,
      `Alarm flood: ${f.new_alerts} new alerts in ${min} min — grouped by building and kind, life safety first`,
      `报警泛滥 Alarm flood: ${min} 分钟内 ${f.new_alerts} 条新告警 · ${f.new_alerts} new alerts in ${min} min — 按楼栋和类型分组，生命安全优先 · grouped by building and kind, life safety first`,
    ));
  }
}

function setReadOnly(ro) {
  const changed = ro !== state.readOnly;
  state.readOnly = ro;
  document.body.dataset.readOnly = ro ? '1' : '0';
  $('readonly-banner').hidden = !ro;
  showSession();
  if (changed) scheduleRender();
}

function showSession() {
  const s = state.session || {};
  const signed = signedIn();
  // The form while nobody is signed in, unless the gateway is read-only and reading is
  // open anyway (signing in would change nothing).
  $('login').hidden = signed || (state.readOnly && s.can_read !== false);
  $('session').hidden = !signed;
  setText($('operator-name'), userName());
  setText($('operator-role'), signed ? `(${label(ROLE[s.role], s.role)})` : '');
  document.body.dataset.signedIn = userName();
  document.body.dataset.role = signed ? s.role : '';
}

/** Asks the gateway who is signed in; redraws what depends on it. */
async function loadSession() {
  try {
    state.session = await getJson('/api/session');
  } catch {
    state.session = { signed_in: false };
  }
  if (typeof state.session.read_only === 'boolean') setReadOnly(state.session.read_only);
  showSession();
  renderRollCalls();
  scheduleRender();
  return state.session;
}

async function signIn(ev) {
  ev.preventDefault();
  const name = $('operator-input').value.trim();
  const password = $('password-input').value;
  if (!name || !password) return;
  $('login-btn').disabled = true;
  let r;
  try {
    r = await fetch('/api/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name, password }),
    });
  } catch (e) {
    $('login-btn').disabled = false;
    showMessage(`${tr('网络错误', 'Network error')}: ${e.message}`);
    return;
  }
  $('login-btn').disabled = false;
  $('password-input').value = '';
  let j = null;
  try { j = await r.json(); } catch { /* an error body may be empty */ }
  if (!r.ok) {
    const detail = j && j.error ? ` (${j.error})` : '';
    showMessage(r.status === 429
      ? `${tr('登录已锁定', 'Sign-in locked')}${detail}`
      : `${tr('账号或密码错误', 'Wrong account or password')}${detail}`);
    $('password-input').focus();
    return;
  }
  clearMessage();
  await loadSession();
  if (!stream) connect();
}

async function signOut() {
  try {
    await fetch('/api/session', { method: 'DELETE', headers: { 'X-CSRF-Token': state.session.csrf_token || '' } });
  } catch { /* the session ends at its expiry anyway */ }
  const s = await loadSession();
  if (!s.can_read) stopReading();
}

/** Reading needs a sign-in again: the stream closes and the lists empty. */
function stopReading() {
  clearTimeout(retryTimer);
  if (stream) stream.close();
  stream = null;
  setLive(null);
  state.alerts.clear();
  state.devices.clear();
  scheduleRender();
}

// ---------------------------------------------------------------------------------------
// Rendering: batched, at most a few times a second whatever the number of updates (a
// busy estate folds repeats into its alerts many times a second; nobody reads faster,
// and a cheap tablet must not spend its time re-laying out the page)
// ---------------------------------------------------------------------------------------

const RENDER_EVERY_MS = 250;
let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => requestAnimationFrame(() => {
    renderQueued = false;
    renderAlerts();
    renderDevices();
  }), RENDER_EVERY_MS);
}

// ---------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------

async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

/** A write with the session's CSRF token: the answer's JSON, or null (the reason shown). */
async function post(path, body, opts = {}) {
  if (!signedIn()) {
    showMessage(tr('请先登录', 'Sign in first', '请先登录 · Sign in first'));
    showSession();
    $('operator-input').focus();
    return null;
  }
  let r;
  try {
    r = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': state.session.csrf_token || '' },
      body: JSON.stringify(body),
    });
  } catch (e) {
    showMessage(`${tr('网络错误', 'Network error')}: ${e.message}`);
    return null;
  }
  let j = null;
  try { j = await r.json(); } catch { /* error bodies may be empty */ }
  if (r.ok) {
    clearMessage();
    return j;
  }
  const detail = j && j.error ? ` (${j.error})` : '';
  if (r.status === 401) {
    await loadSession();
    showMessage(`${tr('登录已失效，请重新登录', 'Signed out: sign in again')}${detail}`);
  } else if (r.status === 403) {
    await loadSession();
    showMessage(`${tr('拒绝', 'Refused')}${detail}`);
  } else if (r.status === 404) {
    showMessage(`${opts.notFound || tr('告警不存在', 'Alert not found')}${detail}`);
  } else if (r.status === 409) {
    showMessage(`${opts.conflict || tr('告警状态已变化', 'The alert has changed')}${detail}`);
  } else {
    showMessage(`${tr('操作失败', 'Failed')}: HTTP ${r.status}${detail}`);
  }
  return null;
}

async function refreshAlert(id) {
  try {
    upsertAlert(await getJson(`/api/alerts/${encodeURIComponent(id)}`), { live: false });
  } catch { /* the stream will bring it */ }
}

async function acknowledge(id) {
  const row = state.alertRows.get(id);
  if (row) row.el.ack.disabled = true;
  const a = await post(`/api/alerts/${encodeURIComponent(id)}/ack`, { note: '' });
  if (row) row.el.ack.disabled = false;
  if (a) upsertAlert(a, { live: false });
  else await refreshAlert(id);
}

/** What a dialog acts on: the alert's label in the chosen language, and where it is. */
function alertWhat(a) {
  const zh = codeZh.get(a.code);
  const what = zh && lang !== 'en' ? tr(zh, a.title || a.code) : (a.title || a.code);
  return `${what} — ${placeText(a.location)}`;
}

function openCloseDialog(id) {
  const a = state.alerts.get(id);
  if (!a) return;
  state.closing = id;
  const form = $('close-form');
  form.reset();
  setText($('close-what'), alertWhat(a));
  $('close-dialog').showModal();
}

async function submitClose(ev) {
  ev.preventDefault();
  const id = state.closing;
  const form = $('close-form');
  const disposition = form.elements.disposition.value;
  if (!id || !disposition) return;
  const note = form.elements.note.value.trim();
  $('close-confirm').disabled = true;
  const a = await post(`/api/alerts/${encodeURIComponent(id)}/close`, { disposition, note });
  $('close-confirm').disabled = false;
  if (a) {
    $('close-dialog').close();
    state.closing = null;
    upsertAlert(a, { live: false });
    showMessage(`${tr('已关闭', 'Closed')}: ${label(DISPOSITION[disposition], disposition)}`, 'info');
  } else if (canAct()) {
    await refreshAlert(id);
  } else {
    $('close-dialog').close();
  }
}

/** Shelve (asks how long and why) or, when shelved, unshelve. */
async function toggleShelf(id) {
  const a = state.alerts.get(id);
  if (!a) return;
  if (a.shelved) {
    const r = await post(`/api/alerts/${encodeURIComponent(id)}/unshelve`, {});
    if (r) upsertAlert(r, { live: false }); else await refreshAlert(id);
    return;
  }
  state.shelving = id;
  $('shelve-form').reset();
  setText($('shelve-what'), alertWhat(a));
  $('shelve-dialog').showModal();
}

async function submitShelve(ev) {
  ev.preventDefault();
  const id = state.shelving;
  const form = $('shelve-form');
  const reason = form.elements.reason.value.trim();
  if (!id || !reason) return;
  const a = await post(`/api/alerts/${encodeURIComponent(id)}/shelve`, { minutes: Number(form.elements.minutes.value), reason });
  $('shelve-dialog').close();
  state.shelving = null;
  if (a) upsertAlert(a, { live: false }); else await refreshAlert(id);
}

/** Loads the three lists; the stream is already open, and what it changed meanwhile wins. */
async function loadAll() {
  state.touchedAlerts.clear();
  state.touchedDevices.clear();
  const [status, alerts, devices, rollCalls] = await Promise.all([
    getJson('/api/status'),
    getJson('/api/alerts?status=open&limit=1000'),
    getJson('/api/devices'),
    getJson('/api/roll-calls'),
    loadCodes(),
  ]);
  applyStatus(status);
  for (const rc of rollCalls.roll_calls) upsertRollCall(rc, { live: false });
  const seenA = new Set();
  for (const a of alerts.alerts) {
    seenA.add(a.id);
    if (!state.touchedAlerts.has(a.id)) upsertAlert(a, { live: state.loaded });
  }
  for (const id of [...state.alerts.keys()]) {
    if (!seenA.has(id) && !state.touchedAlerts.has(id)) state.alerts.delete(id);
  }
  const seenD = new Set();
  for (const d of devices.devices) {
    seenD.add(d.id);
    if (!state.touchedDevices.has(d.id)) state.devices.set(d.id, d);
  }
  for (const id of [...state.devices.keys()]) {
    if (!seenD.has(id) && !state.touchedDevices.has(id)) state.devices.delete(id);
  }
  scheduleRender();
}

// ---------------------------------------------------------------------------------------
// Live stream with reconnect
// ---------------------------------------------------------------------------------------

let stream = null;
let lastMessage = 0;
let retryMs = 1000;
let needResync = true;

let liveUp = null; // null: not connected yet

function setLive(up) {
  liveUp = up;
  const el = $('live');
  if (up === null) {
    setAttr(el, 'data-state', 'connecting');
    setText(el, tr('连接中', 'Connecting…'));
    return;
  }
  setAttr(el, 'data-state', up ? 'up' : 'down');
  setText(el, up ? tr('实时', 'Live') : tr('重连中', 'Reconnecting…'));
}

function connect() {
  if (stream) stream.close();
  const es = new EventSource('/api/stream');
  stream = es;
  lastMessage = Date.now();
  es.addEventListener('open', async () => {
    lastMessage = Date.now();
    retryMs = 1000;
    setLive(true);
    if (!needResync) return;
    try {
      await loadAll();
      needResync = false;
      if (!state.loaded) {
        state.loaded = true;
        document.body.dataset.ready = '1';
      }
    } catch (e) {
      showMessage(`${tr('加载失败', 'Load failed')}: ${e.message}`);
      reconnectLater();
    }
  });
  es.addEventListener('alert', (e) => {
    lastMessage = Date.now();
    const a = JSON.parse(e.data);
    state.touchedAlerts.add(a.id);
    upsertAlert(a, { live: true });
  });
  es.addEventListener('device', (e) => {
    lastMessage = Date.now();
    const d = JSON.parse(e.data);
    state.touchedDevices.add(d.id);
    upsertDevice(d);
  });
  es.addEventListener('roll_call', (e) => {
    lastMessage = Date.now();
    upsertRollCall(JSON.parse(e.data), { live: true });
  });
  es.addEventListener('status', (e) => {
    lastMessage = Date.now();
    applyStatus(JSON.parse(e.data));
  });
  es.addEventListener('resync', async () => {
    // The stream skipped changes (this client fell behind): read the lists again.
    lastMessage = Date.now();
    try {
      await loadAll();
    } catch {
      reconnectLater();
    }
  });
  es.addEventListener('error', () => {
    setLive(false);
    needResync = true;
    // The browser retries by itself unless the stream was refused outright (a restart,
    // or a session that ended: then the form comes back).
    if (es.readyState === EventSource.CLOSED) {
      loadSession().then((s) => (s.can_read ? reconnectLater() : stopReading()));
    }
  });
}

let retryTimer = 0;
function reconnectLater() {
  if (stream) stream.close();
  setLive(false);
  needResync = true;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 15000);
}

// ---------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------

function start() {
  setLanguage(localStorage.getItem(LANG_KEY) || 'both');
  $('lang').addEventListener('change', (ev) => chooseLanguage(ev.target.value));
  startSound();
  for (const k of OLD_KEYS) localStorage.removeItem(k);
  $('login').addEventListener('submit', signIn);
  $('logout-btn').addEventListener('click', signOut);
  $('close-form').addEventListener('submit', submitClose);
  $('shelve-form').addEventListener('submit', submitShelve);
  $('shelve-cancel').addEventListener('click', () => $('shelve-dialog').close());
  $('close-cancel').addEventListener('click', () => {
    state.closing = null;
    $('close-dialog').close();
  });
  setReadOnly(true);
  loadSession().then((s) => {
    if (s.can_read) connect();
    else $('operator-input').focus();
  });
  setInterval(tickRollCalls, 1000);
  setInterval(() => {
    // Ages move on; a stream that went silent is replaced.
    scheduleRender();
    remindCritical();
    if (stream && stream.readyState === EventSource.OPEN && Date.now() - lastMessage > STALE_STREAM_MS) {
      reconnectLater();
    }
  }, 5000);
}

start();
