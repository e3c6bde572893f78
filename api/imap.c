/* imap.c - the bounce mailbox over IMAP (see imap.h). A placeholder
 * until the protocol is built: it greets with a refusal and closes. */
#include "imap.h"

#include <stdlib.h>

#include "base/conn.h"
#include "base/list.h"
#include "base/util.h"

struct imap_server {
	struct imap_params p;
	struct rp_list sessions;
	unsigned nsessions;
};

struct imap_session {
	struct conn conn;
	struct imap_server *srv;
	struct rp_list link;
};

static void on_connected(struct conn *c, int err)
{
	(void)c;
	(void)err;
}

static void on_data(struct conn *c)
{
	buf_consume(&c->in, buf_used(&c->in));
}

static void on_closed(struct conn *c, int err)
{
	(void)c;
	(void)err;
}

static void on_released(struct conn *c)
{
	struct imap_session *s = c->owner;
	struct imap_server *srv = s->srv;
	rp_list_del(&s->link);
	srv->nsessions--;
	free(s);
	srv->p.session_gone(srv->p.arg);
}

static const struct conn_ops ops = {
	.connected = on_connected,
	.data = on_data,
	.closed = on_closed,
	.released = on_released,
};

struct imap_server *imap_server_new(const struct imap_params *p)
{
	struct imap_server *srv = xcalloc(1, sizeof(*srv));
	srv->p = *p;
	rp_list_init(&srv->sessions);
	return srv;
}

void imap_server_free(struct imap_server *srv)
{
	if (!srv)
		return;
	rp_assert(!srv->nsessions);
	free(srv);
}

void imap_server_set_config(struct imap_server *srv, const struct mailbox_config *cfg)
{
	srv->p.cfg = cfg;
}

void imap_session_start(struct imap_server *srv, int fd, bool implicit_tls)
{
	struct imap_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	conn_init(&s->conn, srv->p.loop, &ops, s);
	rp_list_add(&srv->sessions, &s->link);
	srv->nsessions++;
	conn_attach(&s->conn, fd);
	if (implicit_tls) {
		conn_close(&s->conn);
		return;
	}
	conn_line(&s->conn, "* BYE ringpost IMAP is not built yet");
	conn_close_after_flush(&s->conn);
}

void imap_shutdown_all(struct imap_server *srv)
{
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &srv->sessions)
	{
		conn_close(&rp_list_entry(pos, struct imap_session, link)->conn);
	}
}

unsigned imap_sessions(const struct imap_server *srv)
{
	return srv->nsessions;
}

void imap_mailbox_changed(struct imap_server *srv)
{
	(void)srv;
}
