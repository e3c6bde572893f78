/* api_submit.c - POST /v1/messages and POST /v1/messages/batch.
 *
 * A request is parsed (jansson), every message validated and built (MIME,
 * or the caller's raw message), committed through the one submission path
 * (queue/submit.h), and answered
 * with 202 only when every accepted message of the request is durable.
 * Validation names the field: 400 for wrong shapes, 422 for bad addresses,
 * 413 for sizes, 503 (Retry-After) when the spool refuses new mail.
 * {{name}} in subject, text and html is rendered per recipient (recipient
 * vars over message vars); only then does each recipient get its own body.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "base/addr.h"
#include "base/log.h"
#include "base/msg_header.h"
#include "base/util.h"
#include "http.h"
#include "mime.h"
#include "queue/submit.h"
#include "template.h"

#define TO_LIST_MAX 10 /* more recipients than this: To: undisclosed-recipients:; */

struct api_rcpt {
	const char *email; /* JSON string, lives with the JSON document */
	size_t len;
	size_t at;    /* offset of '@' */
	json_t *vars; /* recipient vars object or NULL */
};

struct api_msg {
	struct submission sub;  /* envelope, recipients, prefix, the commit */
	struct api_submit *req; /* the request it belongs to */
	int status;             /* 0 = accepted so far; else its HTTP status */
	char code[24];
	char message[320];
	struct buf body;      /* the shared content (after the prefix) */
	struct buf *variants; /* per-recipient bodies, prefix included */
	struct iovec *viov;
	struct api_rcpt *to;
	unsigned nrcpt;
};

struct api_submit {
	struct api_session *s;
	json_t *doc;
	bool batch;
	unsigned n, pending;
	struct api_msg *msgs;
	json_t **objs;                /* the messages' JSON (in doc); NULL
	                               * until the body is parsed */
	unsigned next;                /* the next one to prepare */
	struct api_submit *work_next; /* srv->work_head list */
};

/* Work on submissions (parsing, then validating, composing and handing
 * messages to the spool) per loop iteration and shard, across requests:
 * a few 1,000-message batches arriving together held the loop for 140 ms. */
#define API_WORK_SLICE_NS 4000000ull

static void msg_error(struct api_msg *m, int status, const char *code, const char *fmt, ...)
    RP_PRINTF(4, 5);
static void msg_error(struct api_msg *m, int status, const char *code, const char *fmt, ...)
{
	if (m->status)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->message, sizeof(m->message), fmt, ap);
	va_end(ap);
	m->status = status;
	snprintf(m->code, sizeof(m->code), "%s", code);
}

/* ---- fields ------------------------------------------------------------ */

/* split_mailbox - "Name <a@b>" or "a@b": the address part. */
static bool split_mailbox(const char *s, const char **addr, size_t *len)
{
	const char *lt = strrchr(s, '<');
	if (!lt) {
		*addr = s;
		*len = strlen(s);
		return true;
	}
	const char *gt = strchr(lt, '>');
	if (!gt || gt[1])
		return false;
	*addr = lt + 1;
	*len = (size_t)(gt - lt - 1);
	return true;
}

static bool check_address(struct api_msg *m, const char *field, const char *a, size_t n, size_t *at)
{
	enum addr_error e = addr_check(a, n, true, at);
	if (e == ADDR_OK)
		return true;
	msg_error(m, 422, "invalid_address", "%s: '%.*s' is not a valid address (%s)", field,
	          (int)RP_MIN(n, (size_t)200), a, addr_error_str(e));
	return false;
}

static const char *opt_string(struct api_msg *m, json_t *o, const char *key, size_t *len)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return NULL;
	if (!json_is_string(v)) {
		msg_error(m, 400, "bad_field", "%s must be a string", key);
		return NULL;
	}
	if (len)
		*len = json_string_length(v);
	return json_string_value(v);
}

static bool scalar_vars(struct api_msg *m, json_t *vars, const char *where)
{
	if (!vars)
		return true;
	if (!json_is_object(vars)) {
		msg_error(m, 400, "bad_field", "%s must be an object", where);
		return false;
	}
	const char *k;
	json_t *v;
	json_object_foreach(vars, k, v)
	{
		if (json_is_object(v) || json_is_array(v)) {
			msg_error(m, 400, "bad_field", "%s.%s must be a string, number or boolean",
			          where, k);
			return false;
		}
	}
	return true;
}

static bool parse_recipients(struct api_msg *m, json_t *to, uint32_t max)
{
	json_t *one = NULL;
	size_t n;
	if (json_is_string(to) || json_is_object(to)) {
		one = to;
		n = 1;
	} else if (json_is_array(to)) {
		n = json_array_size(to);
	} else {
		msg_error(m, 400, "bad_field", "to must be an array of addresses");
		return false;
	}
	if (!n) {
		msg_error(m, 400, "bad_field", "to must name at least one recipient");
		return false;
	}
	if (n > max) {
		msg_error(m, 400, "bad_field", "to has %zu recipients; at most %u are allowed", n,
		          max);
		return false;
	}
	m->to = xcalloc(n, sizeof(*m->to));
	m->nrcpt = (unsigned)n;
	for (size_t i = 0; i < n; i++) {
		json_t *e = one ? one : json_array_get(to, i);
		struct api_rcpt *r = &m->to[i];
		char where[40];
		snprintf(where, sizeof(where), "to[%zu]", i);
		json_t *email = e;
		if (json_is_object(e)) {
			const char *k;
			json_t *v;
			json_object_foreach(e, k, v)
			{
				if (strcmp(k, "email") && strcmp(k, "vars")) {
					msg_error(m, 400, "bad_field", "%s: unknown field '%s'",
					          where, k);
					return false;
				}
			}
			email = json_object_get(e, "email");
			r->vars = json_object_get(e, "vars");
			char vw[48];
			snprintf(vw, sizeof(vw), "%s.vars", where);
			if (!scalar_vars(m, r->vars, vw))
				return false;
		}
		if (!json_is_string(email)) {
			msg_error(m, 400, "bad_field",
			          "%s must be an address or {\"email\", \"vars\"}", where);
			return false;
		}
		r->email = json_string_value(email);
		r->len = json_string_length(email);
		if (!check_address(m, where, r->email, r->len, &r->at))
			return false;
	}
	return true;
}

/* ---- rendering --------------------------------------------------------- */

struct lookup_ctx {
	json_t *rcpt_vars, *msg_vars;
	char scratch[64];
};

static const char *lookup(void *arg, const char *name, size_t len, size_t *vlen)
{
	struct lookup_ctx *c = arg;
	json_t *v = NULL;
	if (c->rcpt_vars)
		v = json_object_getn(c->rcpt_vars, name, len);
	if (!v && c->msg_vars)
		v = json_object_getn(c->msg_vars, name, len);
	if (!v)
		return NULL;
	if (json_is_string(v)) {
		*vlen = json_string_length(v);
		return json_string_value(v);
	}
	if (json_is_integer(v))
		*vlen = (size_t)snprintf(c->scratch, sizeof(c->scratch), "%lld",
		                         (long long)json_integer_value(v));
	else if (json_is_real(v)) /* %g's 6 digits would print 1234567.89 as 1.23457e+06 */
		*vlen =
		    (size_t)snprintf(c->scratch, sizeof(c->scratch), "%.15g", json_real_value(v));
	else if (json_is_true(v))
		*vlen = (size_t)snprintf(c->scratch, sizeof(c->scratch), "true");
	else if (json_is_false(v))
		*vlen = (size_t)snprintf(c->scratch, sizeof(c->scratch), "false");
	else
		*vlen = 0, c->scratch[0] = '\0';
	return c->scratch;
}

static char *render(const char *s, size_t n, struct lookup_ctx *lc, bool html, size_t *out_len)
{
	struct buf b = { 0 };
	template_render(&b, s, n, lookup, lc, html ? TEMPLATE_HTML : TEMPLATE_RAW);
	*out_len = buf_used(&b);
	return buf_cstr(&b); /* the buf's storage, freed by the caller */
}

/* check_size - the message as built against max_message_size; which names
 * the recipient for a per-recipient body ("" for the shared one). */
static bool check_size(struct api_msg *m, const struct submission *sub,
                       const struct api_config *cfg, const char *which)
{
	uint64_t n = submission_size(sub);
	if (n <= cfg->max_message_size)
		return true;
	msg_error(m, 413, "too_large", "the message%s is %llu bytes; the limit is %llu", which,
	          (unsigned long long)n, (unsigned long long)cfg->max_message_size);
	return false;
}

/* The parts of a message that the JSON fields give, shared by every
 * recipient's copy. Strings point into the JSON document. */
struct mime_parts {
	const char *from, *subject, *text, *html;
	size_t subj_len, text_len, html_len;
	json_t *vars;           /* message vars, or NULL */
	struct mime_header *hv; /* extra header fields */
	unsigned nh;
	const char *to_override;  /* headers.To */
	const char *unsub_url;    /* unsubscribe.url (https), or NULL */
	const char *unsub_mailto; /* unsubscribe.mailto, or NULL */
	size_t unsub_url_len, unsub_mailto_len;
	struct mime_attachment *att;
	unsigned natt;
	struct buf att_data; /* the decoded attachments */
};

/* parse_headers - the "headers" object: extra fields, with To apart. */
static bool parse_headers(struct api_msg *m, json_t *hdrs, struct mime_parts *mp)
{
	if (!hdrs || json_is_null(hdrs))
		return true;
	if (!json_is_object(hdrs)) {
		msg_error(m, 400, "bad_field", "headers must be an object");
		return false;
	}
	mp->hv = xcalloc(json_object_size(hdrs) + 1, sizeof(*mp->hv));
	const char *k;
	json_t *v;
	json_object_foreach(hdrs, k, v)
	{
		if (!mime_header_name_ok(k)) {
			msg_error(m, 400, "bad_field", "headers: '%s' is not a valid header name",
			          k);
			return false;
		}
		if (!json_is_string(v) ||
		    !mime_header_value_ok(json_string_value(v), json_string_length(v))) {
			msg_error(m, 400, "bad_field",
			          "headers.%s must be a string without line breaks", k);
			return false;
		}
		if (!strcasecmp(k, "To")) {
			mp->to_override = json_string_value(v);
			continue;
		}
		if (!strcasecmp(k, "Bcc")) {
			msg_error(m, 400, "bad_field",
			          "headers.Bcc would be shown to every recipient; put blind copies "
			          "in to");
			return false;
		}
		if (mime_header_reserved(k)) {
			msg_error(m, 400, "bad_field",
			          "headers.%s is set by ringpost; use the message fields", k);
			return false;
		}
		mp->hv[mp->nh].name = k;
		mp->hv[mp->nh].value = json_string_value(v);
		mp->nh++;
	}
	return true;
}

/* ---- one-click unsubscribe (RFC 2369, RFC 8058) ------------------------ */

#define UNSUB_MAX 900 /* bytes of one rendered URI: the field stays under 998 */

/* parse_unsubscribe - "unsubscribe": {"url": "https://...", "mailto": "..."}
 * (either or both, {{vars}} allowed). */
static bool parse_unsubscribe(struct api_msg *m, json_t *u, struct mime_parts *mp)
{
	if (!u || json_is_null(u))
		return true;
	if (!json_is_object(u)) {
		msg_error(m, 400, "bad_field",
		          "unsubscribe must be an object: {\"url\", \"mailto\"}");
		return false;
	}
	const char *k;
	json_t *v;
	json_object_foreach(u, k, v)
	{
		if (strcmp(k, "url") && strcmp(k, "mailto")) {
			msg_error(m, 400, "bad_field", "unsubscribe: unknown field '%s'", k);
			return false;
		}
		if (!json_is_string(v) || !json_string_length(v)) {
			msg_error(m, 400, "bad_field", "unsubscribe.%s must be a non-empty string",
			          k);
			return false;
		}
	}
	json_t *url = json_object_get(u, "url"), *mt = json_object_get(u, "mailto");
	if (!url && !mt) {
		msg_error(m, 400, "bad_field", "unsubscribe needs url, mailto or both");
		return false;
	}
	if (url) {
		mp->unsub_url = json_string_value(url);
		mp->unsub_url_len = json_string_length(url);
		if (mp->unsub_url_len < 9 || strncasecmp(mp->unsub_url, "https://", 8)) {
			msg_error(m, 400, "bad_field",
			          "unsubscribe.url must be an https:// URL (RFC 8058 one-click)");
			return false;
		}
	}
	if (mt) {
		mp->unsub_mailto = json_string_value(mt);
		mp->unsub_mailto_len = json_string_length(mt);
	}
	for (unsigned i = 0; i < mp->nh; i++)
		if (!strncasecmp(mp->hv[i].name, "List-Unsubscribe", 16)) {
			msg_error(m, 400, "bad_field",
			          "headers.%s cannot be combined with unsubscribe", mp->hv[i].name);
			return false;
		}
	return true;
}

/* unsub_uri - "<URI>" appended to out: s rendered (values percent-encoded)
 * with lc's vars, or as written when lc is NULL; checked to be a URI. */
static bool unsub_uri(struct api_msg *m, const char *what, const char *s, size_t n,
                      struct lookup_ctx *lc, struct buf *out)
{
	buf_puts(out, "<");
	size_t start = buf_used(out);
	if (!strcmp(what, "mailto") && (n < 7 || strncasecmp(s, "mailto:", 7)))
		buf_puts(out, "mailto:");
	if (lc)
		template_render(out, s, n, lookup, lc, TEMPLATE_URL);
	else
		buf_append(out, s, n);
	size_t len = buf_used(out) - start;
	const unsigned char *p = (const unsigned char *)buf_head(out) + start;
	if (memchr(p, '{', len) || memchr(p, '}', len)) {
		msg_error(m, 400, "bad_field",
		          "unsubscribe.%s has a {{placeholder}} no vars give (or a brace)", what);
		return false;
	}
	for (size_t i = 0; i < len; i++)
		if (p[i] <= ' ' || p[i] >= 0x7f || p[i] == '<' || p[i] == '>' || p[i] == '"') {
			msg_error(m, 400, "bad_field",
			          "unsubscribe.%s must be a URI: no blanks, quotes, angle brackets "
			          "or non-ASCII (percent-encode them)",
			          what);
			return false;
		}
	if (len > UNSUB_MAX) {
		msg_error(m, 400, "bad_field", "unsubscribe.%s is longer than %d bytes", what,
		          UNSUB_MAX);
		return false;
	}
	buf_puts(out, ">");
	return true;
}

/* unsub_headers - hv[0..nh) = the caller's fields, then List-Unsubscribe
 * (its value in val) and, for a URL, List-Unsubscribe-Post. */
static bool unsub_headers(struct api_msg *m, const struct mime_parts *mp, struct lookup_ctx *lc,
                          struct buf *val, struct mime_header *hv, unsigned *nh)
{
	if (mp->nh)
		memcpy(hv, mp->hv, mp->nh * sizeof(*hv));
	*nh = mp->nh;
	if (!mp->unsub_url && !mp->unsub_mailto)
		return true;
	buf_reset(val);
	if (mp->unsub_url && !unsub_uri(m, "url", mp->unsub_url, mp->unsub_url_len, lc, val))
		return false;
	if (mp->unsub_url && mp->unsub_mailto)
		buf_puts(val, ", ");
	if (mp->unsub_mailto &&
	    !unsub_uri(m, "mailto", mp->unsub_mailto, mp->unsub_mailto_len, lc, val))
		return false;
	hv[(*nh)++] = (struct mime_header){ .name = "List-Unsubscribe", .value = buf_cstr(val) };
	if (mp->unsub_url)
		hv[(*nh)++] = (struct mime_header){ .name = "List-Unsubscribe-Post",
			                            .value = "List-Unsubscribe=One-Click" };
	return true;
}

/* parse_attachments - decoded into one buffer, then pointed at. */
static bool parse_attachments(struct api_msg *m, json_t *atts, struct mime_parts *mp)
{
	if (!atts || json_is_null(atts))
		return true;
	if (!json_is_array(atts)) {
		msg_error(m, 400, "bad_field", "attachments must be an array");
		return false;
	}
	mp->natt = (unsigned)json_array_size(atts);
	mp->att = xcalloc(mp->natt + 1, sizeof(*mp->att));
	size_t *offs = xcalloc(mp->natt + 1, sizeof(*offs));
	bool ok = false;
	for (unsigned i = 0; i < mp->natt; i++) {
		json_t *a = json_array_get(atts, i);
		json_t *fn = json_object_get(a, "filename");
		json_t *ct = json_object_get(a, "content_type");
		json_t *content = json_object_get(a, "content");
		if (!json_is_object(a) || !json_is_string(content) || (fn && !json_is_string(fn)) ||
		    (ct && !json_is_string(ct))) {
			msg_error(m, 400, "bad_field",
			          "attachments[%u] needs filename, content_type (strings) and "
			          "content (base64)",
			          i);
			goto out;
		}
		offs[i] = buf_used(&mp->att_data);
		if (!base64_decode(json_string_value(content), json_string_length(content),
		                   &mp->att_data)) {
			msg_error(m, 400, "bad_field",
			          "attachments[%u].content is not valid base64", i);
			goto out;
		}
		mp->att[i].filename = fn ? json_string_value(fn) : NULL;
		mp->att[i].content_type = ct ? json_string_value(ct) : NULL;
		if (mp->att[i].filename &&
		    !mime_header_value_ok(mp->att[i].filename, strlen(mp->att[i].filename))) {
			msg_error(m, 400, "bad_field", "attachments[%u].filename has a line break",
			          i);
			goto out;
		}
	}
	offs[mp->natt] = buf_used(&mp->att_data);
	for (unsigned i = 0; i < mp->natt; i++) {
		mp->att[i].data = (const unsigned char *)buf_head(&mp->att_data) + offs[i];
		mp->att[i].len = offs[i + 1] - offs[i];
	}
	ok = true;
out:
	free(offs);
	return ok;
}

/* mime_of - the MIME description of the parts (to, bodies and ids set by
 * the caller). */
static void mime_of(const struct mime_parts *mp, struct mime_message *mm)
{
	memset(mm, 0, sizeof(*mm));
	mm->from = mp->from;
	mm->subject = mp->subject;
	mm->text = mp->text;
	mm->text_len = mp->text_len;
	mm->html = mp->html;
	mm->html_len = mp->html_len;
	mm->headers = mp->hv;
	mm->nheaders = mp->nh;
	mm->attachments = mp->att;
	mm->nattachments = mp->natt;
}

/* build_shared - one body for every recipient (no placeholders). */
static bool build_shared(struct api_msg *m, const struct mime_parts *mp,
                         const struct api_config *cfg)
{
	struct mime_message mm;
	char mid[64], id[17], err[200];
	struct buf to = { 0 }, uv = { 0 };
	mime_of(mp, &mm);
	struct mime_header *hv = xcalloc(mp->nh + 2, sizeof(*hv));
	unsigned nh;
	if (!unsub_headers(m, mp, NULL, &uv, hv, &nh)) {
		free(hv);
		buf_free(&uv);
		return false;
	}
	mm.headers = hv;
	mm.nheaders = nh;
	rp_id_format(m->sub.id, id);
	if (mp->to_override) {
		buf_puts(&to, mp->to_override);
	} else if (m->nrcpt <= TO_LIST_MAX) {
		for (unsigned i = 0; i < m->nrcpt; i++) {
			if (i)
				buf_puts(&to, ", ");
			buf_append(&to, m->to[i].email, m->to[i].len);
		}
	} else {
		buf_puts(&to, "undisclosed-recipients:;");
	}
	mm.to = buf_cstr(&to);
	snprintf(mid, sizeof(mid), "%s@%s", id, cfg->hostname);
	mm.message_id = mid;
	mm.date_ms = m->sub.submit_ms;
	mm.seed = m->sub.id;
	bool built = mime_build(&mm, &m->body, err, sizeof(err));
	buf_free(&to);
	buf_free(&uv);
	free(hv);
	if (!built) {
		msg_error(m, 400, "bad_field", "%s", err);
		return false;
	}
	submission_content(&m->sub, buf_head(&m->body), buf_used(&m->body));
	return check_size(m, &m->sub, cfg, "");
}

/* build_variants - each recipient its own body, with its vars rendered
 * into subject, text and html; the prefix is written into each. */
static bool build_variants(struct api_msg *m, const struct mime_parts *mp,
                           const struct api_config *cfg)
{
	struct mime_message mm;
	char mid[64], id[17], err[200];
	mime_of(mp, &mm);
	rp_id_format(m->sub.id, id);
	mm.date_ms = m->sub.submit_ms;
	mm.message_id = mid;
	const struct buf *prefix = submission_prefix(&m->sub);
	m->variants = xcalloc(m->nrcpt, sizeof(*m->variants));
	m->viov = xcalloc(m->nrcpt, sizeof(*m->viov));
	struct mime_header *hv = xcalloc(mp->nh + 2, sizeof(*hv));
	struct buf uv = { 0 };
	bool ok = false;
	mm.headers = hv;
	for (unsigned i = 0; i < m->nrcpt; i++) {
		struct lookup_ctx lc = { .rcpt_vars = m->to[i].vars, .msg_vars = mp->vars };
		if (!unsub_headers(m, mp, &lc, &uv, hv, &mm.nheaders))
			goto out;
		size_t sl = 0, tl = 0, hl = 0;
		char *rs = mp->subject ? render(mp->subject, mp->subj_len, &lc, false, &sl) : NULL;
		char *rt = mp->text ? render(mp->text, mp->text_len, &lc, false, &tl) : NULL;
		char *rh = mp->html ? render(mp->html, mp->html_len, &lc, true, &hl) : NULL;
		char to[ADDR_MAX + 1];
		snprintf(to, sizeof(to), "%.*s", (int)m->to[i].len, m->to[i].email);
		mm.to = mp->to_override ? mp->to_override : to;
		mm.subject = rs;
		mm.text = rt;
		mm.text_len = tl;
		mm.html = rh;
		mm.html_len = hl;
		mm.seed = m->sub.id * 1000003 + i;
		snprintf(mid, sizeof(mid), "%s.%u@%s", id, i, cfg->hostname);
		buf_append(&m->variants[i], buf_head(prefix), buf_used(prefix));
		bool built = mime_build(&mm, &m->variants[i], err, sizeof(err));
		free(rs);
		free(rt);
		free(rh);
		if (!built) {
			msg_error(m, 400, "bad_field", "%s", err);
			goto out;
		}
		if (buf_used(&m->variants[i]) > cfg->max_message_size) {
			msg_error(m, 413, "too_large",
			          "the message for to[%u] is %zu bytes; the limit is %llu", i,
			          buf_used(&m->variants[i]),
			          (unsigned long long)cfg->max_message_size);
			goto out;
		}
		m->viov[i].iov_base = buf_head(&m->variants[i]);
		m->viov[i].iov_len = buf_used(&m->variants[i]);
	}
	submission_variants(&m->sub, m->viov);
	ok = true;
out:
	free(hv);
	buf_free(&uv);
	return ok;
}

/* build_mime - subject/text/html/headers/attachments into one body, or one
 * per recipient when placeholders are used. */
static bool build_mime(struct api_msg *m, json_t *o, const struct api_config *cfg)
{
	struct mime_parts mp = { 0 };
	mp.from = opt_string(m, o, "from", NULL);
	mp.subject = opt_string(m, o, "subject", &mp.subj_len);
	mp.text = opt_string(m, o, "text", &mp.text_len);
	mp.html = opt_string(m, o, "html", &mp.html_len);
	if (m->status)
		return false;
	if (!mp.text && !mp.html) {
		msg_error(m, 400, "bad_field", "one of text, html or raw is required");
		return false;
	}
	mp.vars = json_object_get(o, "vars");
	bool ok = false;
	if (!scalar_vars(m, mp.vars, "vars") ||
	    !parse_headers(m, json_object_get(o, "headers"), &mp) ||
	    !parse_unsubscribe(m, json_object_get(o, "unsubscribe"), &mp) ||
	    !parse_attachments(m, json_object_get(o, "attachments"), &mp))
		goto out;
	bool per_rcpt =
	    (mp.unsub_url && template_has_vars(mp.unsub_url, mp.unsub_url_len)) ||
	    (mp.unsub_mailto && template_has_vars(mp.unsub_mailto, mp.unsub_mailto_len)) ||
	    (mp.subject && template_has_vars(mp.subject, mp.subj_len)) ||
	    (mp.text && template_has_vars(mp.text, mp.text_len)) ||
	    (mp.html && template_has_vars(mp.html, mp.html_len));
	ok = per_rcpt ? build_variants(m, &mp, cfg) : build_shared(m, &mp, cfg);
out:
	free(mp.hv);
	free(mp.att);
	buf_free(&mp.att_data);
	return ok;
}

/* raw_unsubscribe - a raw message's unsubscribe fields, written into
 * m->body ahead of it (no {{vars}}: a raw message is sent as it is). */
static bool raw_unsubscribe(struct api_msg *m, json_t *u, const char *raw, size_t len)
{
	struct mime_parts mp = { 0 };
	if (!u || json_is_null(u))
		return true;
	if (!parse_unsubscribe(m, u, &mp))
		return false;
	if ((mp.unsub_url && template_has_vars(mp.unsub_url, mp.unsub_url_len)) ||
	    (mp.unsub_mailto && template_has_vars(mp.unsub_mailto, mp.unsub_mailto_len))) {
		msg_error(m, 400, "bad_field",
		          "unsubscribe: {{vars}} need text or html (raw is sent as it is)");
		return false;
	}
	struct msg_header_info hi;
	const char *v;
	size_t vl;
	msg_header_scan(raw, len, &hi);
	if (msg_header_get(raw, hi.end, "List-Unsubscribe", &v, &vl) ||
	    msg_header_get(raw, hi.end, "List-Unsubscribe-Post", &v, &vl)) {
		msg_error(m, 400, "bad_field",
		          "raw has List-Unsubscribe already; drop unsubscribe");
		return false;
	}
	struct mime_header hv[2];
	unsigned nh;
	struct buf val = { 0 };
	bool ok = unsub_headers(m, &mp, NULL, &val, hv, &nh);
	for (unsigned i = 0; ok && i < nh; i++)
		mime_encode_header(&m->body, hv[i].name, hv[i].value, false);
	buf_free(&val);
	return ok;
}

/* build_raw - the caller's own RFC 5322 message. */
static bool build_raw(struct api_msg *m, json_t *o, const struct api_config *cfg)
{
	static const char *const excluded[] = { "subject", "text", "html", "headers",
		                                "attachments" };
	for (size_t i = 0; i < RP_ARRAY_LEN(excluded); i++)
		if (json_object_get(o, excluded[i])) {
			msg_error(m, 400, "bad_field", "raw cannot be combined with %s",
			          excluded[i]);
			return false;
		}
	size_t len = 0;
	const char *raw = opt_string(m, o, "raw", &len);
	if (!raw)
		return false;
	if (memchr(raw, '\0', len)) {
		msg_error(m, 400, "bad_field", "raw contains a NUL byte");
		return false;
	}
	if (!raw_unsubscribe(m, json_object_get(o, "unsubscribe"), raw, len))
		return false;
	size_t at = buf_used(&m->body);
	buf_append(&m->body, raw, len);
	msg_normalize_newlines(&m->body, at);
	struct msg_header_info hi;
	msg_header_scan(buf_head(&m->body), buf_used(&m->body), &hi);
	if (!hi.fields) {
		msg_error(m, 400, "bad_field", "raw is not an RFC 5322 message (no header fields)");
		return false;
	}
	submission_complete(&m->sub, buf_head(&m->body), buf_used(&m->body), cfg->hostname);
	submission_content(&m->sub, buf_head(&m->body), buf_used(&m->body));
	if (!addr_is_ascii(raw, len))
		m->sub.flags |= MSG_F_8BIT;
	return check_size(m, &m->sub, cfg, "");
}

/* ---- one message ------------------------------------------------------- */

static void msg_committed(struct submission *sub, void *arg);

static const char *const message_fields[] = {
	"from",    "to",   "subject",     "text", "html",
	"headers", "vars", "attachments", "raw",  "unsubscribe",
};

/* prepare - validate and build one message; on success it is handed to the
 * spool (m->req) and the request waits for it. */
static void prepare(struct api_submit *sub, struct api_msg *m, json_t *o)
{
	struct api_server *srv = sub->s->srv;
	const struct api_config *cfg = srv->cfg;
	m->req = sub;
	if (!json_is_object(o)) {
		msg_error(m, 400, "bad_field", "a message must be a JSON object");
		return;
	}
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		bool known = false;
		for (size_t i = 0; i < RP_ARRAY_LEN(message_fields); i++)
			known |= !strcmp(k, message_fields[i]);
		if (!known) {
			msg_error(m, 400, "bad_field", "unknown field '%s'", k);
			return;
		}
	}
	const char *from = opt_string(m, o, "from", NULL);
	if (m->status)
		return;
	if (!from) {
		msg_error(m, 400, "bad_field", "from is required");
		return;
	}
	const char *fa;
	size_t fl;
	if (!split_mailbox(from, &fa, &fl)) {
		msg_error(m, 422, "invalid_address", "from: '%s' is not an address", from);
		return;
	}
	if (!check_address(m, "from", fa, fl, NULL))
		return;
	json_t *to = json_object_get(o, "to");
	if (!to) {
		msg_error(m, 400, "bad_field", "to is required");
		return;
	}
	if (!parse_recipients(m, to, cfg->max_recipients))
		return;
	if (!spool_accepting(srv->spool)) {
		msg_error(m, 503, "unavailable", "the spool is full; retry later");
		return;
	}
	bool utf8 = !addr_is_ascii(fa, fl);
	submission_sender(&m->sub, fa, fl, 0, NULL, 0);
	for (unsigned i = 0; i < m->nrcpt; i++) {
		submission_add_rcpt(&m->sub, m->to[i].email, m->to[i].len, 0, NULL, 0);
		utf8 |= !addr_is_ascii(m->to[i].email, m->to[i].len);
	}
	if (utf8)
		m->sub.flags |= MSG_F_SMTPUTF8;
	char source[96];
	snprintf(source, sizeof(source), "key #%d %s", sub->s->req.key_index, sub->s->peer);
	submission_start(&m->sub, srv->spool, source);
	struct submit_trace t = {
		.from = "api", .from_ip = source, .by = cfg->hostname, .with = "HTTP"
	};
	submission_trace(&m->sub, &t);
	bool built = json_object_get(o, "raw") ? build_raw(m, o, cfg) : build_mime(m, o, cfg);
	if (!built)
		return;
	sub->pending++;
	submission_sign(&m->sub, cfg->signers, cfg->dkim);
	submission_commit(&m->sub, srv->spool, loop_inbox(srv->loop), msg_committed, m);
}

static void msg_free(struct api_msg *m)
{
	submission_free(&m->sub);
	buf_free(&m->body);
	if (m->variants)
		for (unsigned i = 0; i < m->nrcpt; i++)
			buf_free(&m->variants[i]);
	free(m->variants);
	free(m->viov);
	free(m->to);
}

/* ---- answers ----------------------------------------------------------- */

static void result_json(struct buf *b, const struct api_msg *m)
{
	char id[17];
	if (m->status) {
		buf_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", m->code);
		http_json_str(b, m->message, strlen(m->message));
		buf_puts(b, "}}");
		return;
	}
	rp_id_format(m->sub.id, id);
	buf_printf(b, "{\"id\":\"%s\",\"recipients\":[", id);
	for (unsigned i = 0; i < m->nrcpt; i++) {
		buf_puts(b, i ? ",{\"email\":" : "{\"email\":");
		http_json_str(b, m->to[i].email, m->to[i].len);
		buf_printf(b, ",\"id\":\"%s.%u\"%s}", id, i,
		           submission_rcpt_suppressed(&m->sub, i) ? ",\"state\":\"suppressed\""
		                                                  : "");
	}
	buf_puts(b, "]}");
}

static void submit_finish(struct api_submit *sub)
{
	struct api_session *s = sub->s;
	struct buf b = { 0 };
	if (!s->released) {
		if (!sub->batch) {
			struct api_msg *m = &sub->msgs[0];
			if (m->status) {
				http_error(s, m->status, m->code, "%s", m->message);
			} else {
				result_json(&b, m);
				http_respond_json(s, 202, &b);
			}
		} else {
			buf_puts(&b, "{\"results\":[");
			for (unsigned i = 0; i < sub->n; i++) {
				if (i)
					buf_puts(&b, ",");
				result_json(&b, &sub->msgs[i]);
			}
			buf_puts(&b, "]}");
			http_respond_json(s, 202, &b);
		}
	}
	buf_free(&b);
	for (unsigned i = 0; i < sub->n; i++)
		msg_free(&sub->msgs[i]);
	free(sub->msgs);
	free(sub->objs);
	json_decref(sub->doc);
	free(sub);
	http_end_async(s);
}

/* msg_committed - the spool answered for one message: route its
 * recipients, and answer the request when it was the last. */
static void msg_committed(struct submission *ms, void *arg)
{
	struct api_msg *m = arg;
	struct api_submit *sub = m->req;
	struct api_server *srv = sub->s->srv;
	enum spool_status st = submission_status(ms);
	if (st == SPOOL_OK) {
		submission_route(ms, srv->ops->route, srv->ctx);
		srv->accepted++;
		srv->suppressed += submission_suppressed(ms);
		if (log_enabled(LOG_INFO)) {
			char id[17];
			size_t slen;
			const char *sender = submission_sender_addr(ms, &slen);
			rp_id_format(ms->id, id);
			log_info("api accepted id=%s from=<%.*s> nrcpt=%u size=%llu client=%s", id,
			         (int)slen, sender, m->nrcpt,
			         (unsigned long long)submission_size(ms), sub->s->peer);
		}
	} else if (st == SPOOL_EFULL) {
		msg_error(m, 503, "unavailable", "the spool is full; retry later");
	} else {
		msg_error(m, 503, "unavailable",
		          "the spool could not store the message; retry later");
	}
	if (m->status)
		srv->rejected++;
	if (--sub->pending == 0)
		submit_finish(sub);
}

#define API_PROBE_MIN    (256u * 1024) /* bodies above this have their memory checked */
#define API_PROBE_FACTOR 6             /* JSON values, lexer copies, MIME (QP: 3x) */

/* parse - the request's body as JSON, and its messages: false after
 * answering an error (the submission is then over). */
static bool parse(struct api_submit *sub)
{
	struct api_session *s = sub->s;
	/* The body is JSON whatever the Content-Type says: `curl -d` sends
	 * application/x-www-form-urlencoded, and refusing it helps nobody. */
	json_error_t je;
	/* Memory for a large body first: jansson's out-of-memory paths are
	 * not safe (SIGSEGV, "double free" inside json_loadb under RLIMIT_AS)
	 * and the MIME built from the document takes up to three times its
	 * text again. A request that cannot have that much now is a 503
	 * (Retry-After), never a crash. Advisory: other threads allocate too. */
	size_t len = buf_used(&s->req.body);
	if (len > API_PROBE_MIN) {
		/* mmap, not malloc: an address-space reservation never touched,
		 * and no change to malloc's mmap threshold. */
		size_t n = len * API_PROBE_FACTOR;
		void *probe =
		    mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (probe == MAP_FAILED) {
			http_error(s, 503, "unavailable",
			           "no memory for a request of %zu bytes; retry later", len);
			return false;
		}
		munmap(probe, n);
	}
	sub->doc =
	    json_loadb(buf_head(&s->req.body), buf_used(&s->req.body), JSON_REJECT_DUPLICATES, &je);
	if (!sub->doc) {
		http_error(s, 400, "bad_json", "invalid JSON at line %d, column %d: %s", je.line,
		           je.column, je.text);
		return false;
	}
	if (!sub->batch) {
		sub->n = 1;
		sub->objs = xmalloc(sizeof(*sub->objs));
		sub->objs[0] = sub->doc;
	} else {
		json_t *msgs = json_object_get(sub->doc, "messages");
		if (!json_is_object(sub->doc) || json_object_size(sub->doc) != 1 ||
		    !json_is_array(msgs)) {
			http_error(s, 400, "bad_field", "the body must be {\"messages\": [...]}");
			return false;
		}
		size_t n = json_array_size(msgs);
		if (!n) {
			http_error(s, 400, "bad_field", "messages is empty");
			return false;
		}
		if (n > s->srv->cfg->max_batch) {
			http_error(s, 413, "too_large",
			           "messages has %zu entries; at most %u per batch", n,
			           s->srv->cfg->max_batch);
			return false;
		}
		sub->n = (unsigned)n;
		sub->objs = xcalloc(n, sizeof(*sub->objs));
		for (size_t i = 0; i < n; i++)
			sub->objs[i] = json_array_get(msgs, i);
	}
	sub->msgs = xcalloc(sub->n, sizeof(*sub->msgs));
	/* Hold one count so that early commits cannot finish the request
	 * before every message has been handed over. */
	sub->pending = 1;
	return true;
}

static void work_pop(struct api_server *srv)
{
	struct api_submit *sub = srv->work_head;
	srv->work_head = sub->work_next;
	if (!srv->work_head)
		srv->work_tail = NULL;
}

/* work - parse queued requests and prepare their messages, oldest request
 * first, for about API_WORK_SLICE_NS of this iteration; the rest in the
 * next ones. A body is parsed in one go (jansson has no incremental
 * parser): one 1,000-message batch costs ~20 ms, and no longer eight of
 * them that arrived together in one iteration. */
static void work(struct loop_defer *d)
{
	struct api_server *srv = RP_CONTAINER_OF(d, struct api_server, work);
	uint64_t start = rp_mono_ns();
	bool first = true;
	while (srv->work_head && (first || rp_mono_ns() - start < API_WORK_SLICE_NS)) {
		first = false;
		struct api_submit *sub = srv->work_head;
		if (!sub->objs) {
			if (sub->s->released || !parse(sub)) { /* gone, or answered */
				work_pop(srv);
				struct api_session *s = sub->s;
				json_decref(sub->doc);
				free(sub);
				http_end_async(s);
			}
			continue;
		}
		while (sub->next < sub->n) {
			struct api_msg *m = &sub->msgs[sub->next];
			prepare(sub, m, sub->objs[sub->next]);
			if (m->status)
				srv->rejected++;
			sub->next++;
			if ((sub->next & 15) == 0 && rp_mono_ns() - start >= API_WORK_SLICE_NS)
				break;
		}
		if (sub->next < sub->n)
			break;
		work_pop(srv);
		if (--sub->pending == 0)
			submit_finish(sub);
	}
	if (srv->work_head)
		loop_defer_next(srv->loop, &srv->work, work);
}

/* submit - queue the request; its answer comes once its messages are
 * durable (or refused). */
static void submit(struct api_session *s, bool batch)
{
	struct api_server *srv = s->srv;
	struct api_submit *sub = xcalloc(1, sizeof(*sub));
	sub->s = s;
	sub->batch = batch;
	http_begin_async(s);
	if (srv->work_tail)
		srv->work_tail->work_next = sub;
	else
		srv->work_head = sub;
	srv->work_tail = sub;
	/* At the end of this batch of completions (a no-op when the work is
	 * already queued, for now or for the next iteration). */
	loop_defer(srv->loop, &srv->work, work);
}

void api_submit_one(struct api_session *s, const char *arg)
{
	(void)arg;
	submit(s, false);
}

void api_submit_batch(struct api_session *s, const char *arg)
{
	(void)arg;
	submit(s, true);
}
