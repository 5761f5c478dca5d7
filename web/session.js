// Signing in and out: the sign-in form, and the switch between it and the app (which clears what the last user
// had on screen).
import { $ } from './dom.js';
import { S, client } from './state.js';
import { renderList } from './conversation-list.js';
import { setMode } from './composer.js';
import { renderUploads } from './uploads.js';
import { showAdminButton } from './admin-dialog.js';

export function showAuth() {
  $('app-view').hidden = true;
  $('auth-view').hidden = false;
  S.convs.clear();
  S.open = null;
  S.presence.clear();
  for (const t of S.typing.values()) for (const timer of t.values()) clearTimeout(timer);
  S.typing.clear();
  for (const u of S.uploads.values()) u.controller.abort();
  S.uploads.clear();
  renderUploads();
  setMode(null);
  document.body.classList.remove('chat-open');
  $('conv-list').replaceChildren();
  $('admin-btn').hidden = true;
  $('message-list').replaceChildren();
  $('auth-username').focus();
}

export function showApp() {
  $('auth-view').hidden = true;
  $('app-view').hidden = false;
  $('me-name').textContent = client.user.username;
  $('me-name').title = client.user.username;
  S.receipts = client.loadUserData('receipts', {}) ?? {};
  renderList();
  if (!S.open) {
    $('chat-pane').hidden = true;
    $('chat-empty').hidden = false;
  }
  $('new-chat').focus();
  showAdminButton();
  client.connect();
}

export async function onAuth(ev) {
  ev.preventDefault();
  const action = ev.submitter?.value ?? 'login';
  const username = $('auth-username').value.trim();
  const password = $('auth-password').value;
  const err = $('auth-error');
  err.textContent = '';
  const buttons = $('auth-form').querySelectorAll('button');
  buttons.forEach((b) => (b.disabled = true));
  try {
    if (action === 'register') await client.register(username, password, 'Web browser');
    else await client.login(username, password, 'Web browser');
    $('auth-password').value = '';
  } catch (e) {
    err.textContent = e.status === 401 ? 'Wrong username or password.' : e.message;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}
