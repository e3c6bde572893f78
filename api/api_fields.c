/* api_fields.c - field checks of an API message apart from composing it:
 * addresses, the "headers" object (headers.To as a list of mailboxes) and
 * attachments. Each failure is the message's error, naming the field. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_submit_impl.h"
#include "base/addr.h"
#include "base/base64.h"

bool api_check_address(struct api_msg *m, const char *field, const char *a, size_t n, size_t *at)
{
	enum addr_error e = addr_check(a, n, true, at);
	if (e == ADDR_OK)
		return true;
	api_msg_error(m, 422, "invalid_address", "%s: '%.*s' is not a valid address (%s)", field,
	              (int)RP_MIN(n, (size_t)200), a, addr_error_str(e));
	return false;
}

/* to_list_ok - headers.To: addresses, each "addr" or "name <addr>" with
 * a display name of whole words (or one empty group "name:;"). */
static bool to_list_ok(struct api_msg *m, const char *v)
{
	size_t n = strlen(v), start = 0;
	bool q = false, angle = false;
	if (n && v[n - 1] == ';' && memchr(v, ':', n) && !memchr(v, '@', n) && !memchr(v, '"', n))
		return true; /* "undisclosed-recipients:;" */
	for (size_t i = 0; i <= n; i++) {
		if (i == n && (q || angle)) {
			api_msg_error(m, 400, "bad_field", "headers.To has an unbalanced %s",
			              q ? "quote" : "'<'");
			return false;
		}
		char c = i < n ? v[i] : ',';
		if (c == '\\' && q && i + 1 < n) {
			i++;
			continue;
		}
		if (c == '"')
			q = !q;
		else if (!q && c == '<')
			angle = true;
		else if (!q && c == '>')
			angle = false;
		if (c != ',' || q || angle)
			continue;
		const char *name, *addr, *why;
		size_t nl, al;
		if ((why = mime_mailbox_split(v + start, i - start, &name, &nl, &addr, &al))) {
			api_msg_error(m, 400, "bad_field", "headers.To: '%.*s' %s",
			              (int)RP_MIN(i - start, (size_t)200), v + start, why);
			return false;
		}
		if (!api_check_address(m, "headers.To", addr, al, NULL))
			return false;
		start = i + 1;
	}
	return true;
}

bool api_parse_headers(struct api_msg *m, json_t *hdrs, struct mime_parts *mp)
{
	if (!hdrs || json_is_null(hdrs))
		return true;
	if (!json_is_object(hdrs)) {
		api_msg_error(m, 400, "bad_field", "headers must be an object");
		return false;
	}
	mp->hv = xcalloc(json_object_size(hdrs) + 1, sizeof(*mp->hv));
	const char *k;
	json_t *v;
	json_object_foreach(hdrs, k, v)
	{
		if (!mime_header_name_ok(k)) {
			api_msg_error(m, 400, "bad_field",
			              "headers: '%s' is not a valid header name", k);
			return false;
		}
		if (!json_is_string(v) ||
		    !mime_header_value_ok(json_string_value(v), json_string_length(v))) {
			api_msg_error(m, 400, "bad_field",
			              "headers.%s must be a string without line breaks", k);
			return false;
		}
		if (!strcasecmp(k, "To")) {
			if (!to_list_ok(m, json_string_value(v)))
				return false;
			mp->to_override = json_string_value(v);
			continue;
		}
		if (!strcasecmp(k, "Bcc")) {
			api_msg_error(
			    m, 400, "bad_field",
			    "headers.Bcc would be shown to every recipient; put blind copies "
			    "in to");
			return false;
		}
		if (mime_header_reserved(k)) {
			api_msg_error(m, 400, "bad_field",
			              "headers.%s is set by ringpost; use the message fields", k);
			return false;
		}
		mp->hv[mp->nh].name = k;
		mp->hv[mp->nh].value = json_string_value(v);
		mp->nh++;
	}
	return true;
}

bool api_parse_attachments(struct api_msg *m, json_t *atts, struct mime_parts *mp)
{
	if (!atts || json_is_null(atts))
		return true;
	if (!json_is_array(atts)) {
		api_msg_error(m, 400, "bad_field", "attachments must be an array");
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
			api_msg_error(m, 400, "bad_field",
			              "attachments[%u] needs filename, content_type (strings) and "
			              "content (base64)",
			              i);
			goto out;
		}
		offs[i] = buf_used(&mp->att_data);
		if (!base64_decode(json_string_value(content), json_string_length(content),
		                   &mp->att_data)) {
			api_msg_error(m, 400, "bad_field",
			              "attachments[%u].content is not valid base64", i);
			goto out;
		}
		mp->att[i].filename = fn ? json_string_value(fn) : NULL;
		mp->att[i].content_type = ct ? json_string_value(ct) : NULL;
		if (mp->att[i].filename &&
		    !mime_header_value_ok(mp->att[i].filename, strlen(mp->att[i].filename))) {
			api_msg_error(m, 400, "bad_field",
			              "attachments[%u].filename has a line break", i);
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
