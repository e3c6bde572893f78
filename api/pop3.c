/* pop3.c - the bounce mailbox over POP3 (see pop3.h). A placeholder
 * until the protocol is built: it greets with a refusal and closes. */
#include "pop3.h"

#include <stdlib.h>

#include "base/conn.h"
#include "base/list.h"
#include "base/util.h"

struct pop3_server {
	struct pop3_params p;
	struct rp_list sessions;
	unsigned nsessions;
};

struct pop3_session {
	struct conn conn;
	struct pop3_server *srv;
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
	struct pop3_session *s = c->owner;
	struct pop3_server *srv = s->srv;
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

struct pop3_server *pop3_server_new(const struct pop3_params *p)
{
	struct pop3_server *srv = xcalloc(1, sizeof(*srv));
	srv->p = *p;
	rp_list_init(&srv->sessions);
	return srv;
}

void pop3_server_free(struct pop3_server *srv)
{
	if (!srv)
		return;
	rp_assert(!srv->nsessions);
	free(srv);
}

void pop3_server_set_config(struct pop3_server *srv, const struct mailbox_config *cfg)
{
	srv->p.cfg = cfg;
}

void pop3_session_start(struct pop3_server *srv, int fd, bool implicit_tls)
{
	struct pop3_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	conn_init(&s->conn, srv->p.loop, &ops, s);
	rp_list_add(&srv->sessions, &s->link);
	srv->nsessions++;
	conn_attach(&s->conn, fd);
	if (implicit_tls) {
		conn_close(&s->conn);
		return;
	}
	conn_line(&s->conn, "-ERR ringpost POP3 is not built yet");
	conn_close_after_flush(&s->conn);
}

void pop3_shutdown_all(struct pop3_server *srv)
{
	struct rp_list *pos, *tmp;
	rp_list_foreach_safe(pos, tmp, &srv->sessions)
	{
		conn_close(&rp_list_entry(pos, struct pop3_session, link)->conn);
	}
}

unsigned pop3_sessions(const struct pop3_server *srv)
{
	return srv->nsessions;
}

void pop3_mailbox_changed(struct pop3_server *srv)
{
	(void)srv;
}
