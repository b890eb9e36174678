/*
 * ssh.h - the SSH driver: ctx.ssh.exec / put / get for modules that manage
 * hosts over SSH (bare metal, interconnect links), run on a worker thread
 * pool so the loop thread never blocks.
 *
 * Lua API (all three must be called from a resource handler; each suspends
 * the calling task until the work is done):
 *   exec{host=, port=22, user=, key_file= | key=, host_key_sha256= |
 *        known_hosts=, command=, stdin=, timeout_ms=}
 *     -> {status=, stdout=, stderr=[, signal=]}   status -1 when killed by a signal
 *   put{..., path=, content=, mode=420} -> {size=, mode=}    over SFTP
 *   get{..., path=} -> {content=, mode=, size=}, or nil, message when the
 *     file does not exist
 * Any other failure raises a Lua error naming user@host:port and the path
 * or the command (its first line, at most 160 bytes); private keys never
 * appear in messages or logs.  A non-zero exit status is not a failure.
 *
 * Host keys are always checked before authenticating: against the pinned
 * SHA256 fingerprint ("SHA256:<base64>", as `ssh-keygen -l -E sha256`
 * prints it), or the given known_hosts file, or (neither given) the
 * user's ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts.  An unknown or
 * mismatching key is an error naming the host and both fingerprints.
 *
 * Connections.  One SSH session per (host, port, user, private key) is
 * kept for the whole run in the runtime (mo_rt.ssh, freed by
 * mo_rt_release()).  Calls on one session are serialised; different
 * sessions run in parallel on MECORCH_SSH_THREADS workers (default 8).  A
 * cached session that turns out to be dead is reopened once, when nothing
 * can have run on it yet.  A call's timeout_ms (default 300000) runs from
 * the moment a worker starts it and covers connecting and the whole
 * command or transfer; a call that times out closes its session.
 *
 * mo_rt_release() joins the workers and frees every session; call it once
 * the loop will not be run again (before mo_loop_free()).
 */
#ifndef MO_SSH_H
#define MO_SSH_H

#include <lua.h>

typedef struct mo_task mo_task;

/* Stack: +1 (the ssh table: exec, put, get). */
int mo_open_ssh(lua_State *L);

/* Withdraw the ctx.ssh call the task is waiting in, if any, so the task
 * can be freed: its completion is then discarded (the work itself, on a
 * worker, runs to its end).  Call on the loop thread. */
void mo_ssh_cancel_task(mo_task *t);

#endif
