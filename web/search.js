// Search: the box at the top of the sidebar and its results, in place of the conversation list while a query is
// shown. Results are the server's (api.md, "Search"): best first, each with a snippet whose matching words are
// marked. Choosing one opens its conversation at that message (loading older pages until it is there), or the
// thread it is a reply in.
import { $, el } from './dom.js';
import { S, client, hooks } from './state.js';
import { formatTime } from './format.js';
import { convTitle, name } from './labels.js';
import { loadOlder } from './message-list.js';
import { openThread } from './threads.js';

/** Results per page. */
const PAGE = 20;
/** History pages loaded, at most, to reach a result in its conversation (50 messages each). */
const MAX_PAGES_TO_RESULT = 40;
/** Typing pauses this long before the query is sent. */
const DEBOUNCE_MS = 250;

/** The query on screen: `{q, next, results}`, or null; `token` drops answers to queries typed over since. */
let shown = null;
let token = 0;
let timer = 0;

function snippetEl(parts) {
  return el('span', { class: 'search-snippet' }, ...parts.map((p) => (p.hit ? el('mark', { text: p.text }) : document.createTextNode(p.text))));
}

function resultEl({ message: m, snippet }) {
  const c = S.convs.get(m.conversation_id);
  return el(
    'li',
    {},
    el(
      'button',
      { type: 'button', class: 'search-hit', dataset: { conv: m.conversation_id, seq: m.seq } },
      el(
        'span',
        { class: 'search-head' },
        el('span', { class: 'conv-title', text: c ? convTitle(c) : 'Conversation' }),
        el('time', { datetime: new Date(m.sent_at).toISOString(), text: formatTime(m.sent_at) }),
      ),
      el('span', { class: 'search-sender', text: m.thread_root ? `${name(m.sender)} in a thread` : name(m.sender) }),
      snippetEl(snippet),
    ),
  );
}

function render() {
  const searching = shown != null;
  $('search-results').hidden = !searching;
  $('conv-list').hidden = searching;
  if (searching) $('conv-empty').hidden = true;
  if (!searching) return;
  $('search-list').replaceChildren(...shown.results.map(resultEl));
  $('search-more').hidden = shown.next == null;
  const n = shown.results.length;
  $('search-status').textContent = shown.error ?? (n === 0 ? 'No messages found.' : n === 1 ? '1 message' : `${n}${shown.next == null ? '' : '+'} messages`);
}

async function run(q, offset = 0) {
  const mine = ++token;
  try {
    const page = await client.search(q, { offset, limit: PAGE });
    if (mine !== token) return;
    const before = offset && shown?.q === q ? shown.results : [];
    shown = { q, next: page.next, results: [...before, ...page.results] };
  } catch (e) {
    if (mine !== token) return;
    shown = { q, next: null, results: [], error: `Search failed: ${e.message}` };
  }
  render();
}

/** The box changed: search after a pause, or go back to the conversation list when it is empty. */
export function onSearchInput() {
  clearTimeout(timer);
  const q = $('search-input').value.trim();
  if (!q) return clearSearch();
  timer = setTimeout(() => run(q), DEBOUNCE_MS);
}

export function submitSearch(ev) {
  ev.preventDefault();
  clearTimeout(timer);
  const q = $('search-input').value.trim();
  if (q) run(q);
}

export function moreResults() {
  if (shown?.next != null) run(shown.q, shown.next);
}

export function clearSearch() {
  clearTimeout(timer);
  token++;
  shown = null;
  $('search-input').value = '';
  render();
  hooks.render?.({ list: true });
}

/** Opens the conversation of a result at its message (or the thread it is a reply in). */
export async function onResultClick(ev) {
  const btn = ev.target.closest('button.search-hit');
  if (!btn) return;
  const conv = btn.dataset.conv;
  const seq = Number(btn.dataset.seq);
  const result = shown?.results.find((r) => r.message.conversation_id === conv && r.message.seq === seq);
  await hooks.openConversation(conv, { focus: false });
  const c = S.convs.get(conv);
  if (!c || S.open !== conv) return;
  const root = result?.message.thread_root;
  if (root) return openThread(c, root);
  for (let pages = 0; !c.msgs?.has(seq) && !c.complete && pages < MAX_PAGES_TO_RESULT && S.open === conv; pages++) {
    await loadOlder(c);
  }
  const li = $('message-list').querySelector(`.msg[data-seq="${seq}"]`);
  if (!li) return;
  li.scrollIntoView({ block: 'center' });
  li.classList.add('found');
  setTimeout(() => li.classList.remove('found'), 2000);
  li.focus();
}
