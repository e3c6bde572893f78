/* mailbox.c - what IMAP and POP3 share (see mailbox.h). */
#include "mailbox.h"

#include <string.h>

bool mailbox_user_allowed(const struct mailbox_config *cfg, const char *name)
{
	const char *p = cfg->allowed;
	if (!p || !*p)
		return true;
	size_t n = strlen(name);
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',' && *e != ' ' && *e != '\t')
			e++;
		if ((size_t)(e - p) == n && !strncmp(p, name, n))
			return true;
		p = e;
	}
	return false;
}
