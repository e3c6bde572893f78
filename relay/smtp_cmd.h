/* smtp_cmd.h - SMTP command-line parsing for the server side (RFC 5321).
 *
 * Pure and allocation-free: results point into the caller's line, which
 * must outlive them. Lines are passed without their CRLF.
 */
#ifndef RP_SMTP_CMD_H
#define RP_SMTP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_verb {
	SMTP_UNKNOWN = 0,
	SMTP_EHLO,
	SMTP_HELO,
	SMTP_MAIL,
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_BDAT,
	SMTP_RSET,
	SMTP_NOOP,
	SMTP_QUIT,
	SMTP_VRFY,
	SMTP_EXPN,
	SMTP_HELP,
	SMTP_STARTTLS,
	SMTP_AUTH,
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg; /* after the verb and its space, trailing blanks dropped */
	size_t arg_len;
};

#define SMTP_MAX_PARAMS 16

struct smtp_param {
	const char *key; /* e.g. "SIZE", case as sent */
	size_t key_len;
	const char *val; /* NULL when the parameter has no "=value" */
	size_t val_len;
};

/* Arguments of MAIL FROM:<...> and RCPT TO:<...>. */
struct smtp_path {
	const char *addr; /* mailbox between the brackets, source route removed */
	size_t addr_len;  /* 0 for the null path <> */
	struct smtp_param params[SMTP_MAX_PARAMS];
	unsigned nparams;
};

/* smtp_cmd_parse - split a command line into verb and argument. */
void smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd);
/* smtp_verb_name - "MAIL" etc., for logs. */
const char *smtp_verb_name(enum smtp_verb v);
/* smtp_path_parse - parse "FROM:<addr> params" (keyword "FROM:" or "TO:",
 * case-insensitive, optional blank after the colon, brackets required
 * unless the address has no blanks). Returns false on bad syntax. */
bool smtp_path_parse(const char *arg, size_t len, const char *keyword, struct smtp_path *out);
/* smtp_param_is - case-insensitive key comparison. */
bool smtp_param_is(const struct smtp_param *p, const char *key);
/* smtp_xtext_decode - decode RFC 3461 xtext into out (NUL-terminated).
 * Returns the decoded length, or -1 on bad syntax or when out is too small. */
long smtp_xtext_decode(const char *s, size_t n, char *out, size_t outlen);
/* smtp_xtext_encode - encode bytes as xtext into out; returns length or -1. */
long smtp_xtext_encode(const char *s, size_t n, char *out, size_t outlen);

#define SMTP_ORCPT_MAX      500 /* octets of an ORCPT value (RFC 3461 4) */
#define SMTP_ORCPT_TYPE_MAX 32  /* octets of its addr-type */

/* smtp_orcpt_parse - an ORCPT value (RFC 3461 4.2: addr-type ";" xtext)
 * into out as "type;address", NUL-terminated: addr-type an atom (RFC 5321
 * atext: "rfc822", "utf-8", ...) of at most SMTP_ORCPT_TYPE_MAX octets,
 * the xtext well-formed and decoding to printable US-ASCII (no control
 * byte, no NUL), the value at most SMTP_ORCPT_MAX octets. Returns the
 * length, or -1 (the client gets 501 5.5.4). */
long smtp_orcpt_parse(const char *val, size_t n, char *out, size_t outlen);
/* smtp_orcpt_encode - the ORCPT value for a stored "type;address" into
 * out ("type;xtext", NUL-terminated), checked as smtp_orcpt_parse checks
 * it; -1 when it would not be well-formed (then no ORCPT goes out). */
long smtp_orcpt_encode(const char *orcpt, size_t n, char *out, size_t outlen);

#endif
