// The dialogs: opening and closing them, and the New chat, New group and Report dialogs (the members dialog is
// in members-dialog.js, the admin dialog in admin-dialog.js).
import { $, toast } from './dom.js';
import { S, client, me } from './state.js';
import { name, snippet } from './labels.js';
import { refreshPresence } from './presence.js';
import { fromDetails } from './conversations.js';
import { openConversation } from './conversation-view.js';

export function openDialog(id) {
  const d = $(id);
  d.querySelectorAll('.error').forEach((e) => (e.textContent = ''));
  d.showModal();
  return d;
}

export function wireDialog(d) {
  d.querySelectorAll('.cancel').forEach((b) => b.addEventListener('click', () => d.close()));
}

/** What is being reported while the report dialog is open: a message ({conversationId, seq}) or a user ({userId}). */
let reporting = null;

export function openReport(c, m) {
  if (!m) return;
  reporting = { conversationId: c.id, seq: m.seq };
  $('dlg-report-title').textContent = 'Report message';
  $('report-quote').textContent = `${name(m.sender)}: ${snippet(m, 140)}`;
  $('report-hint').textContent = 'The server’s admins see the report, with this message as it is now.';
  openReportDialog();
}

/** Reports the other person of a direct conversation. */
export function openReportUser(userId) {
  if (!userId) return;
  reporting = { userId };
  $('dlg-report-title').textContent = 'Report user';
  $('report-quote').textContent = `The user ${name(userId)}`;
  $('report-hint').textContent = 'The server’s admins see the report, with who sent it.';
  openReportDialog();
}

function openReportDialog() {
  $('report-reason').value = 'spam';
  $('report-comment').value = '';
  openDialog('dlg-report');
}

export async function sendReport(ev) {
  ev.preventDefault();
  const d = $('dlg-report');
  if (!reporting) return d.close();
  try {
    const [reason, comment] = [$('report-reason').value, $('report-comment').value.trim()];
    if (reporting.userId) await client.reportUser(reporting.userId, reason, comment);
    else await client.reportMessage(reporting.conversationId, reporting.seq, reason, comment);
    reporting = null;
    d.close();
    toast('Reported. The server’s admins will look at it.');
  } catch (e) {
    d.querySelector('.error').textContent = e.code === 'rate_limited' ? 'You have sent many reports. Try again in a minute.' : e.message;
  }
}

export async function newChat(ev) {
  ev.preventDefault();
  const d = $('dlg-chat');
  const err = d.querySelector('.error');
  const username = $('chat-username').value.trim();
  if (!username) return void (err.textContent = 'Enter a username.');
  try {
    const u = await client.findUser(username);
    if (u.id === me()) return void (err.textContent = 'That is you. Choose someone else.');
    const details = await client.createDirect(u.id);
    const c = S.convs.get(details.conversation.id) ?? fromDetails(details);
    S.convs.set(c.id, c);
    d.close();
    $('chat-username').value = '';
    refreshPresence([u.id]);
    openConversation(c.id);
  } catch (e) {
    err.textContent = e.code === 'not_found' ? `There is no user named “${username}”.` : e.message;
  }
}

export async function resolveUsernames(text) {
  const names = [...new Set(text.split(/[\s,]+/).map((s) => s.trim().replace(/^@/, '')).filter(Boolean))];
  const users = [];
  for (const n of names) {
    try {
      users.push(await client.findUser(n));
    } catch (e) {
      throw new Error(e.code === 'not_found' ? `There is no user named “${n}”.` : e.message);
    }
  }
  return users;
}

export async function newGroup(ev) {
  ev.preventDefault();
  const d = $('dlg-group');
  const err = d.querySelector('.error');
  const title = $('group-title').value.trim();
  if (!title) return void (err.textContent = 'Enter a group name.');
  try {
    const users = await resolveUsernames($('group-members').value);
    const details = await client.createGroup(title, users.map((u) => u.id));
    const c = fromDetails(details);
    S.convs.set(c.id, c);
    d.close();
    $('group-title').value = '';
    $('group-members').value = '';
    openConversation(c.id);
  } catch (e) {
    err.textContent = e.message;
  }
}
