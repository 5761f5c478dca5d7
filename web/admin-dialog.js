// The admin dialog, for the server's admins only (`/me` says `admin`): the open reports, each resolved with a note,
// and an account looked up by username, suspended or let back in, or deleted.
import { $, el, toast } from './dom.js';
import { client } from './state.js';
import { name } from './labels.js';
import { formatTime } from './format.js';
import { openDialog } from './dialogs.js';

/** Shows the Admin button to admins. */
export async function showAdminButton() {
  try {
    $('admin-btn').hidden = !(await client.me()).admin;
  } catch {
    $('admin-btn').hidden = true;
  }
}

export async function openAdmin() {
  openDialog('dlg-admin');
  $('admin-account').replaceChildren();
  $('admin-account-actions').hidden = true;
  await renderReports();
}

async function renderReports() {
  const list = $('admin-reports');
  const err = $('dlg-admin').querySelector('.error');
  try {
    const page = await client.adminReports({ state: 'open', limit: 50 });
    await Promise.all([...new Set(page.reports.flatMap(involved))].map((id) => client.userProfile(id).catch(() => {})));
    list.replaceChildren(...page.reports.map(reportItem));
    $('admin-reports-empty').hidden = page.reports.length > 0;
  } catch (e) {
    err.textContent = e.message;
  }
}

/** The users a report names: its reporter, and the reported user or the reported message's sender. */
function involved(r) {
  return [r.reporter, r.target.kind === 'user' ? r.target.user_id : r.message?.sender].filter(Boolean);
}

function reportItem(r) {
  const what =
    r.target.kind === 'user'
      ? `the user ${name(r.target.user_id)}`
      : `a message by ${name(r.message?.sender)}: “${(r.message?.body ?? '').slice(0, 200)}”`;
  const resolve = async () => {
    try {
      await client.resolveReport(r.id, $('admin-note').value.trim());
      toast('Report resolved.');
      await renderReports();
    } catch (e) {
      $('dlg-admin').querySelector('.error').textContent = e.message;
    }
  };
  return el(
    'li',
    { class: 'report', dataset: { id: r.id } },
    el(
      'div',
      { class: 'report-text' },
      el('strong', { text: r.reason }),
      ` · ${name(r.reporter)} reported ${what}`,
      r.comment ? el('p', { class: 'hint', text: r.comment }) : null,
      el('p', { class: 'hint', text: formatTime(r.created_at) }),
    ),
    el('button', { type: 'button', class: 'small', text: 'Resolve', onclick: resolve }),
  );
}

/** The account on screen while the dialog is open. */
let account = null;

export async function lookUpAccount(ev) {
  ev.preventDefault();
  const err = $('dlg-admin').querySelector('.error');
  err.textContent = '';
  const username = $('admin-username').value.trim();
  if (!username) return void (err.textContent = 'Enter a username.');
  try {
    const u = await client.findUser(username);
    showAccount(await client.adminUser(u.id));
  } catch (e) {
    err.textContent = e.code === 'not_found' ? `There is no user named “${username}”.` : e.message;
  }
}

function showAccount(a) {
  account = a;
  const s = a.suspension;
  const status = s
    ? `suspended since ${formatTime(s.at)} by ${name(s.by)}${s.reason ? `: ${s.reason}` : ''}`
    : `active, ${a.devices.length} device${a.devices.length === 1 ? '' : 's'} logged in`;
  $('admin-account').textContent = `${a.user.username}: ${status}`;
  $('admin-account-actions').hidden = false;
  $('admin-suspend').hidden = !!s;
  $('admin-reason-box').hidden = !!s;
  $('admin-unsuspend').hidden = !s;
}

export async function deleteAccount() {
  if (!account) return;
  const { username } = account.user;
  if (!confirm(`Delete ${username}? Their sessions close, their account is erased and they leave their groups.`)) return;
  try {
    const done = await client.deleteUser(account.user.id);
    client.users.set(done.user.id, done.user);
    account = null;
    $('admin-account').textContent = `${username} is deleted: left ${done.groups_left} group${done.groups_left === 1 ? '' : 's'}, ${done.messages_removed} message${done.messages_removed === 1 ? '' : 's'} removed.`;
    $('admin-account-actions').hidden = true;
    toast(`${username} is deleted.`);
  } catch (e) {
    $('dlg-admin').querySelector('.error').textContent = e.message;
  }
}

export async function suspendAccount() {
  if (!account) return;
  try {
    showAccount(await client.suspendUser(account.user.id, $('admin-reason').value.trim()));
    $('admin-reason').value = '';
    toast(`${account.user.username} is suspended.`);
  } catch (e) {
    $('dlg-admin').querySelector('.error').textContent = e.message;
  }
}

export async function unsuspendAccount() {
  if (!account) return;
  try {
    showAccount(await client.unsuspendUser(account.user.id));
    toast(`${account.user.username} may log in again.`);
  } catch (e) {
    $('dlg-admin').querySelector('.error').textContent = e.message;
  }
}
