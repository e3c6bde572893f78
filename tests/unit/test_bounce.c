/* test_bounce.c - reading what arrives at the bounce MX (queue/bounce.c):
 * real-world reports written out inline (Postfix, Exim, Gmail, Microsoft
 * 365, qmail, delay and success DSNs, Yahoo and AOL complaints, an
 * out-of-office reply), each read with bare LF and again with CRLF, from a
 * buffer of exactly its length (ASan sees any read past it); every output
 * string checked for termination, control bytes and UTF-8; then damaged
 * and hostile input (truncation at every byte, missing and unclosed
 * boundaries, deep nesting, 10,000 parts, a 1 MB header line, NUL bytes,
 * bad base64, empty input) with bounded time; and a throughput figure.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/util.h"
#include "queue/bounce.h"
#include "queue/dsn.h"

#if defined(__SANITIZE_ADDRESS__)
#define SLOW 10 /* sanitizers: allow this much more time */
#else
#define SLOW 1
#endif

/* ---- samples ------------------------------------------------------------ */

#define VERP "bounce+0190f0c1a2b3c4d5-7f3a@bounce.ringpost.test"

/* Postfix: multipart/report with text, delivery-status, headers. */
static const char postfix_dsn[] =
    "Return-Path: <>\n"
    "Received: from mail.example.net (mail.example.net [192.0.2.10])\n"
    "\tby bounce.ringpost.test (ringpost) with ESMTP id 0190f0c1a2b3c4d5\n"
    "\tfor <" VERP ">; Tue, 14 May 2024 10:00:02 +0000\n"
    "Date: Tue, 14 May 2024 10:00:01 +0000 (UTC)\n"
    "From: MAILER-DAEMON@mail.example.net (Mail Delivery System)\n"
    "Subject: Undelivered Mail Returned to Sender\n"
    "To: " VERP "\n"
    "Auto-Submitted: auto-replied\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/report; report-type=delivery-status;\n"
    "\tboundary=\"3F2A41C0A1.1715680801/mail.example.net\"\n"
    "Content-Transfer-Encoding: 8bit\n"
    "Message-Id: <20240514100001.6B7E841C0A2@mail.example.net>\n"
    "\n"
    "This is a MIME-encapsulated message.\n"
    "\n"
    "--3F2A41C0A1.1715680801/mail.example.net\n"
    "Content-Description: Notification\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "This is the mail system at host mail.example.net.\n"
    "\n"
    "I'm sorry to have to inform you that your message could not\n"
    "be delivered to one or more recipients. It's attached below.\n"
    "\n"
    "For further assistance, please send mail to postmaster.\n"
    "\n"
    "If you do so, please include this problem report. You can\n"
    "delete your own text from the attached returned message.\n"
    "\n"
    "                   The mail system\n"
    "\n"
    "<alice@example.org>: host mx1.example.org[198.51.100.7] said: 550 5.1.1\n"
    "    <alice@example.org>: Recipient address rejected: User unknown in virtual\n"
    "    mailbox table (in reply to RCPT TO command)\n"
    "\n"
    "--3F2A41C0A1.1715680801/mail.example.net\n"
    "Content-Description: Delivery report\n"
    "Content-Type: message/delivery-status\n"
    "\n"
    "Reporting-MTA: dns; mail.example.net\n"
    "X-Postfix-Queue-ID: 3F2A41C0A1\n"
    "X-Postfix-Sender: rfc822; " VERP "\n"
    "Arrival-Date: Tue, 14 May 2024 10:00:00 +0000 (UTC)\n"
    "\n"
    "Final-Recipient: rfc822; alice@example.org\n"
    "Original-Recipient: rfc822;Alice@Example.org\n"
    "Action: failed\n"
    "Status: 5.1.1\n"
    "Remote-MTA: dns; mx1.example.org\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <alice@example.org>: Recipient address\n"
    "    rejected: User unknown in virtual mailbox table\n"
    "\n"
    "--3F2A41C0A1.1715680801/mail.example.net\n"
    "Content-Description: Undelivered Message Headers\n"
    "Content-Type: text/rfc822-headers\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Return-Path: <" VERP ">\n"
    "Received: from relay.ringpost.test (relay.ringpost.test [203.0.113.5])\n"
    "\tby mail.example.net (Postfix) with ESMTPS id 3F2A41C0A1\n"
    "\tfor <alice@example.org>; Tue, 14 May 2024 10:00:00 +0000 (UTC)\n"
    "From: News <news@shop.example>\n"
    "To: alice@example.org\n"
    "Subject: Our May offers\n"
    "Message-ID: <0190f0c1a2b3c4d5@relay.ringpost.test>\n"
    "Date: Tue, 14 May 2024 09:59:58 +0000\n"
    "\n"
    "--3F2A41C0A1.1715680801/mail.example.net--\n";

/* Exim 4: one text part, two recipients, an inline copy of the original
 * (whose text must not be taken for the report). */
static const char exim_bounce[] =
    "Return-path: <>\n"
    "Envelope-to: " VERP "\n"
    "Received: from mail by smtp.example.com with local (Exim 4.96)\n"
    "\tid 1s6abc-000Xyz-2Q\n"
    "\tfor " VERP "; Tue, 14 May 2024 10:00:05 +0000\n"
    "X-Failed-Recipients: bob@example.com, carol@nowhere.example\n"
    "Auto-Submitted: auto-replied\n"
    "From: Mail Delivery System <Mailer-Daemon@smtp.example.com>\n"
    "To: " VERP "\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "Subject: Mail delivery failed: returning message to sender\n"
    "Message-Id: <E1s6abc-000Xyz-2Q@smtp.example.com>\n"
    "Date: Tue, 14 May 2024 10:00:05 +0000\n"
    "\n"
    "This message was created automatically by mail delivery software.\n"
    "\n"
    "A message that you sent could not be delivered to one or more of its\n"
    "recipients. This is a permanent error. The following address(es) failed:\n"
    "\n"
    "  bob@example.com\n"
    "    host mx.example.com [192.0.2.25]\n"
    "    SMTP error from remote mail server after RCPT TO:<bob@example.com>:\n"
    "    550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown\n"
    "\n"
    "  carol@nowhere.example\n"
    "    Unrouteable address\n"
    "\n"
    "------ This is a copy of the message, including all the headers. ------\n"
    "\n"
    "Return-path: <" VERP ">\n"
    "Received: from relay.ringpost.test ([203.0.113.5])\n"
    "\tby smtp.example.com with esmtp (Exim 4.96)\n"
    "Message-ID: <0190f0c1a2b3c4d6@relay.ringpost.test>\n"
    "From: news@shop.example\n"
    "To: bob@example.com, carol@nowhere.example\n"
    "Subject: 550 5.7.1 in a subject means nothing\n"
    "\n"
    "A body quoting 550 5.1.1 <decoy@example.net> User unknown.\n";

/* Exim's delay warning. */
static const char exim_delay[] =
    "From: Mail Delivery System <Mailer-Daemon@smtp.example.com>\n"
    "To: " VERP "\n"
    "Subject: Warning: message 1s6abc-000Xyz-2Q delayed 24 hours\n"
    "Auto-Submitted: auto-replied\n"
    "\n"
    "This message was created automatically by mail delivery software.\n"
    "A message that you sent has not yet been delivered to one or more of its\n"
    "recipients after more than 24 hours on the queue on smtp.example.com.\n"
    "\n"
    "The message identifier is:     1s6abc-000Xyz-2Q\n"
    "The subject of the message is: Our May offers\n"
    "\n"
    "The address to which the message has not yet been delivered is:\n"
    "\n"
    "  mallory@slow.example\n"
    "    host mx.slow.example [192.0.2.60]: Connection timed out\n"
    "    Delay reason: SMTP error from remote mail server after RCPT TO:<mallory@slow.example>:\n"
    "    451 4.7.1 Greylisted, please try again later\n"
    "\n"
    "No action is required on your part. Delivery attempts will continue for\n"
    "some time, and this warning may be repeated at intervals if the message\n"
    "remains undelivered.\n";

/* Gmail, older layout: text only (quoted-printable, with an HTML
 * alternative), a multi-line 550-5.1.1 reply. */
static const char gmail_text[] =
    "Delivered-To: " VERP "\n"
    "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n"
    "To: " VERP "\n"
    "Subject: Delivery Status Notification (Failure)\n"
    "In-Reply-To: <0190f0c1a2b3c4d7@relay.ringpost.test>\n"
    "References: <0190f0c1a2b3c4d7@relay.ringpost.test>\n"
    "Auto-Submitted: auto-replied\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/alternative; boundary=001a113f2e4c\n"
    "\n"
    "--001a113f2e4c\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Delivery to the following recipient failed permanently:\n"
    "\n"
    "     dave@example.com\n"
    "\n"
    "Technical details of permanent failure:=20\n"
    "Google tried to deliver your message, but it was rejected by the server for=\n"
    " the recipient domain example.com by mx.example.com. [192.0.2.30].\n"
    "\n"
    "The error that the other server returned was:\n"
    "550-5.1.1 The email account that you tried to reach does not exist. Please =\n"
    "try\n"
    "550-5.1.1 double-checking the recipient's email address for typos or\n"
    "550-5.1.1 unnecessary spaces. Learn more at\n"
    "550 5.1.1  https://support.google.com/mail/?p=3DNoSuchUser d2si123 - gsmtp\n"
    "\n"
    "--001a113f2e4c\n"
    "Content-Type: text/html; charset=UTF-8\n"
    "\n"
    "<p>Delivery to the following recipient failed permanently: 550 5.7.1 html</p>\n"
    "--001a113f2e4c--\n";

/* Gmail, current layout: a DSN whose Diagnostic-Code folds the
 * multi-line reply. */
static const char gmail_dsn[] =
    "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n"
    "Subject: Delivery Status Notification (Failure)\n"
    "Content-Type: multipart/report; boundary=\"000000000000b1\"; "
    "report-type=delivery-status\n"
    "\n"
    "--000000000000b1\n"
    "Content-Type: multipart/related; boundary=\"000000000000b2\"\n"
    "\n"
    "--000000000000b2\n"
    "Content-Type: multipart/alternative; boundary=\"000000000000b3\"\n"
    "\n"
    "--000000000000b3\n"
    "Content-Type: text/plain; charset=\"UTF-8\"\n"
    "\n"
    "** Address not found **\n"
    "\n"
    "Your message wasn't delivered to nina@example.com because the address\n"
    "couldn't be found, or is unable to receive mail.\n"
    "--000000000000b3--\n"
    "--000000000000b2--\n"
    "--000000000000b1\n"
    "Content-Type: message/delivery-status\n"
    "\n"
    "Reporting-MTA: dns; googlemail.com\n"
    "Received-From-MTA: dns; shop.example\n"
    "\n"
    "Final-Recipient: rfc822; nina@example.com\n"
    "Action: failed\n"
    "Status: 5.1.1\n"
    "Remote-MTA: dns; mx.example.com. (192.0.2.31, the server for the domain\n"
    " example.com.)\n"
    "Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does\n"
    " not exist. Please try\n"
    " 550-5.1.1 double-checking the recipient's email address for typos or\n"
    " 550-5.1.1 unnecessary spaces. Learn more at\n"
    " 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser x1si2 - gsmtp\n"
    "Last-Attempt-Date: Tue, 14 May 2024 03:00:07 -0700 (PDT)\n"
    "\n"
    "--000000000000b1\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: news@shop.example\n"
    "To: nina@example.com\n"
    "Message-ID: <0190f0c1a2b3c4d8@relay.ringpost.test>\n"
    "\n"
    "Hello\n"
    "--000000000000b1--\n";

/* Microsoft 365: multipart/report, the text base64 in an alternative,
 * 5.1.10 RecipientNotFound, the original as message/rfc822. */
static const char o365_dsn[] =
    "From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.com>\n"
    "To: " VERP "\n"
    "Subject: Undeliverable: Our May offers\n"
    "Content-Type: multipart/report; report-type=delivery-status;\n"
    "\tboundary=\"c3b1b7f3-a4a0-4a5d-b3b8-1d0e2e6d0b1f\"\n"
    "Auto-Submitted: auto-replied\n"
    "X-MS-Exchange-Message-Is-Ndr:\n"
    "\n"
    "--c3b1b7f3-a4a0-4a5d-b3b8-1d0e2e6d0b1f\n"
    "Content-Type: multipart/alternative; differences=Content-Type;\n"
    "\tboundary=\"d7d5a7a4-7a0a-4c1a-9a8c-7b6a0f1e2d3c\"\n"
    "\n"
    "--d7d5a7a4-7a0a-4c1a-9a8c-7b6a0f1e2d3c\n"
    "Content-Type: text/plain; charset=\"us-ascii\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "WW91ciBtZXNzYWdlIHRvIGVyaW5AY29udG9zby5jb20gY291bGRuJ3QgYmUgZGVsaXZlcmVkLg0K\n"
    "ZXJpbiB3YXNuJ3QgZm91bmQgYXQgY29udG9zby5jb20uDQo=\n"
    "\n"
    "--d7d5a7a4-7a0a-4c1a-9a8c-7b6a0f1e2d3c\n"
    "Content-Type: text/html; charset=\"us-ascii\"\n"
    "\n"
    "<html><body>erin wasn't found at contoso.com.</body></html>\n"
    "--d7d5a7a4-7a0a-4c1a-9a8c-7b6a0f1e2d3c--\n"
    "\n"
    "--c3b1b7f3-a4a0-4a5d-b3b8-1d0e2e6d0b1f\n"
    "Content-Type: message/delivery-status\n"
    "\n"
    "Reporting-MTA: dns;BN6PR11MB1234.namprd11.prod.outlook.com\n"
    "Received-From-MTA: dns;relay.ringpost.test\n"
    "Arrival-Date: Tue, 14 May 2024 10:00:00 +0000\n"
    "\n"
    "Final-Recipient: rfc822;erin@contoso.com\n"
    "Action: failed\n"
    "Status: 5.1.10\n"
    "Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient\n"
    " erin@contoso.com not found by SMTP address lookup\n"
    "X-Display-Name: erin@contoso.com\n"
    "\n"
    "\n"
    "--c3b1b7f3-a4a0-4a5d-b3b8-1d0e2e6d0b1f\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "Received: from relay.ringpost.test (203.0.113.5) by\n"
    " BN6PR11MB1234.namprd11.prod.outlook.com\n"
    "From: News <news@shop.example>\n"
    "To: <erin@contoso.com>\n"
    "Subject: Our May offers\n"
    "Message-ID:\n"
    " <0190f0c1a2b3c4d9@relay.ringpost.test>\n"
    "Content-Type: text/plain\n"
    "\n"
    "Status: 5.2.2 in the original's body means nothing.\n"
    "\n"
    "--c3b1b7f3-a4a0-4a5d-b3b8-1d0e2e6d0b1f--\n";

/* Microsoft, text only (base64, no DSN part). */
static const char o365_text[] =
    "From: postmaster@contoso.com\n"
    "Subject: Undeliverable: Our May offers\n"
    "Content-Type: text/plain; charset=\"us-ascii\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "RGVsaXZlcnkgaGFzIGZhaWxlZCB0byB0aGVzZSByZWNpcGllbnRzIG9yIGdyb3VwczoNCg0KZXJp\n"
    "bkBjb250b3NvLmNvbQ0KVGhlIGVtYWlsIGFkZHJlc3MgeW91IGVudGVyZWQgY291bGRuJ3QgYmUg\n"
    "Zm91bmQuDQoNCkRpYWdub3N0aWMgaW5mb3JtYXRpb24gZm9yIGFkbWluaXN0cmF0b3JzOg0KDQpH\n"
    "ZW5lcmF0aW5nIHNlcnZlcjogQk42UFIxMU1CMTIzNC5uYW1wcmQxMS5wcm9kLm91dGxvb2suY29t\n"
    "DQoNCmVyaW5AY29udG9zby5jb20NClJlbW90ZSBTZXJ2ZXIgcmV0dXJuZWQgJzU1MCA1LjEuMTAg\n"
    "UkVTT0xWRVIuQURSLlJlY2lwaWVudE5vdEZvdW5kOyBSZWNpcGllbnQgZXJpbkBjb250b3NvLmNv\n"
    "bSBub3QgZm91bmQgYnkgU01UUCBhZGRyZXNzIGxvb2t1cCcNCg0KT3JpZ2luYWwgbWVzc2FnZSBo\n"
    "ZWFkZXJzOg0KDQpNZXNzYWdlLUlEOiA8MDE5MGYwYzFhMmIzYzRkYUByZWxheS5yaW5ncG9zdC50\n"
    "ZXN0Pg0KU3ViamVjdDogNTUwIDUuNy4xIGRlY295DQo=\n";

/* qmail-send: two recipients, one with a reply, one with "(#5.1.2)". */
static const char qmail_bounce[] =
    "From: MAILER-DAEMON@mail.example.org\n"
    "To: " VERP "\n"
    "Subject: failure notice\n"
    "\n"
    "Hi. This is the qmail-send program at mail.example.org.\n"
    "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
    "This is a permanent error; I've given up. Sorry it didn't work out.\n"
    "\n"
    "<frank@example.net>:\n"
    "192.0.2.40 does not like recipient.\n"
    "Remote host said: 550 5.1.1 <frank@example.net>... User unknown\n"
    "Giving up on 192.0.2.40.\n"
    "\n"
    "<grace@nonexistent.example>:\n"
    "Sorry, I couldn't find any host named nonexistent.example. (#5.1.2)\n"
    "\n"
    "--- Below this line is a copy of the message.\n"
    "\n"
    "Return-Path: <" VERP ">\n"
    "Message-ID: <0190f0c1a2b3c4db@relay.ringpost.test>\n"
    "Subject: hi\n"
    "\n"
    "550 5.1.1 <decoy@example.net> User unknown\n";

/* Postfix's delay warning: Action delayed, a 4.x.x status, no reply. */
static const char delayed_dsn[] =
    "From: MAILER-DAEMON@mail.example.net (Mail Delivery System)\n"
    "Subject: Delayed Mail (still being retried)\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B7\"\n"
    "\n"
    "--B7\n"
    "Content-Type: text/plain\n"
    "\n"
    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
    "This is the mail system at host mail.example.net.\n"
    "\n"
    "<henry@example.com>: connect to mx.example.com[192.0.2.50]:25: Connection\n"
    "    timed out\n"
    "--B7\n"
    "Content-Type: message/delivery-status\n"
    "\n"
    "Reporting-MTA: dns; mail.example.net\n"
    "Original-Envelope-Id: 0190f0c1a2b3c4dc\n"
    "\n"
    "Final-Recipient: rfc822; henry@example.com\n"
    "Action: delayed\n"
    "Status: 4.4.1\n"
    "Diagnostic-Code: X-Postfix; connect to mx.example.com[192.0.2.50]:25:\n"
    "    Connection timed out\n"
    "Will-Retry-Until: Sun, 19 May 2024 10:00:00 +0000 (UTC)\n"
    "--B7--\n";

/* A success notice (NOTIFY=SUCCESS): Action relayed, 2.0.0. */
static const char delivered_dsn[] =
    "From: MAILER-DAEMON@mail.example.net (Mail Delivery System)\n"
    "Subject: Successful Mail Delivery Report\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=\"S1\"\n"
    "\n"
    "--S1\n"
    "Content-Type: text/plain\n"
    "\n"
    "Your message was successfully delivered to the destination(s) listed below.\n"
    "--S1\n"
    "Content-Type: message/delivery-status\n"
    "\n"
    "Reporting-MTA: dns; mail.example.net\n"
    "\n"
    "Final-Recipient: rfc822; ivan@example.com\n"
    "Action: relayed\n"
    "Status: 2.0.0\n"
    "Remote-MTA: dns; mx.example.com\n"
    "Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 4Vf1\n"
    "--S1--\n";

/* A Yahoo-style complaint (ARF). */
static const char arf_yahoo[] =
    "From: feedback@arf.mail.yahoo.com\n"
    "To: abuse@shop.example\n"
    "Subject: FW: Our May offers\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/report; report-type=feedback-report;\n"
    "\tboundary=\"----=_Part_1_1715680801\"\n"
    "\n"
    "------=_Part_1_1715680801\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "This is an email abuse report for an email message received from IP\n"
    "203.0.113.5 on Tue, 14 May 2024 10:00:00 +0000.\n"
    "------=_Part_1_1715680801\n"
    "Content-Type: message/feedback-report\n"
    "\n"
    "Feedback-Type: abuse\n"
    "User-Agent: Yahoo!-Mail-Feedback/2.0\n"
    "Version: 0.1\n"
    "Original-Mail-From: <" VERP ">\n"
    "Original-Rcpt-To: <judy@yahoo.example>\n"
    "Received-Date: Tue, 14 May 2024 10:00:00 +0000\n"
    "Reported-Domain: shop.example\n"
    "Authentication-Results: mta1000.mail.gq1.yahoo.com from=shop.example;\n"
    " dkim=pass (ok)\n"
    "\n"
    "------=_Part_1_1715680801\n"
    "Content-Type: message/rfc822\n"
    "Content-Disposition: inline\n"
    "\n"
    "Received: from relay.ringpost.test (EHLO relay.ringpost.test) (203.0.113.5)\n"
    "From: News <news@shop.example>\n"
    "To: judy@yahoo.example\n"
    "Subject: Our May offers\n"
    "Message-ID: <0190f0c1a2b3c4dd@relay.ringpost.test>\n"
    "\n"
    "Buy now: 550 5.1.1 user unknown, Status: 5.1.1, all ignored.\n"
    "------=_Part_1_1715680801--\n";

/* An AOL-style complaint: the recipient redacted from the report, only
 * the returned message's To: names it. */
static const char arf_aol[] =
    "From: scomp@aol.net\n"
    "Subject: Email Feedback Report for IP 203.0.113.5\n"
    "Content-Type: multipart/report; report-type=feedback-report; boundary=\"boundary-1\"\n"
    "\n"
    "--boundary-1\n"
    "Content-Type: text/plain\n"
    "\n"
    "This is an email abuse report.\n"
    "--boundary-1\n"
    "Content-Type: message/feedback-report\n"
    "\n"
    "Feedback-Type: Abuse\n"
    "User-Agent: AOL SComp\n"
    "Version: 0.1\n"
    "Source-IP: 203.0.113.5\n"
    "Redacted-Address: redacted\n"
    "--boundary-1\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: news@shop.example\n"
    "To: \"Kate\" <kate@aol.example>\n"
    "Message-ID: <0190f0c1a2b3c4de@relay.ringpost.test>\n"
    "\n"
    "body\n"
    "--boundary-1--\n";

/* A DMARC failure report uses ARF too, and complains about nobody. */
static const char arf_auth_failure[] =
    "From: dmarc@receiver.example\n"
    "Content-Type: multipart/report; report-type=feedback-report; boundary=\"d\"\n"
    "\n"
    "--d\n"
    "Content-Type: message/feedback-report\n"
    "\n"
    "Feedback-Type: auth-failure\n"
    "Auth-Failure: dmarc\n"
    "Original-Rcpt-To: <liz@receiver.example>\n"
    "--d--\n";

/* Out of office: automatic, no failure. */
static const char autoreply[] =
    "From: Larry <larry@example.com>\n"
    "To: " VERP "\n"
    "Subject: Automatic reply: Our May offers\n"
    "Auto-Submitted: auto-replied\n"
    "X-Auto-Response-Suppress: All\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "I am out of the office until 5.6.2024 with limited access to email.\n"
    "For urgent matters: 555-0100 or assistant@example.com.\n";

/* An out-of-office reply quoting a bounce the person once got. */
static const char autoreply_quoting[] =
    "From: Ned <ned@example.com>\n"
    "Subject: Out of Office: Our May offers\n"
    "\n"
    "I am away. PS to IT: my last mail to you could not be delivered:\n"
    "> 550 5.1.1 <it@example.com>: user unknown\n"
    "> Status: 5.1.1\n";

/* A vacation reply that mentions codes but no failure. */
static const char vacation[] = "From: Mia <mia@example.com>\n"
                               "Subject: Out of Office\n"
                               "X-Autoreply: yes\n"
                               "Precedence: auto_reply\n"
                               "\n"
                               "Back on 4.5.12. Room: 550 - Building 5.\n";

/* Plain text quoting replies, sendmail style and without an enhanced code. */
static const char plain_5xx[] =
    "From: Mail Delivery Subsystem <MAILER-DAEMON@old.example>\n"
    "Subject: Returned mail: see transcript for details\n"
    "\n"
    "The original message was received at Tue, 14 May 2024 10:00:00 GMT\n"
    "\n"
    "   ----- The following addresses had permanent fatal errors -----\n"
    "<oscar@old.example>\n"
    "    (reason: 550 5.1.1 <oscar@old.example>... User unknown)\n"
    "\n"
    "   ----- Transcript of session follows -----\n"
    "... while talking to old.example.:\n"
    ">>> RCPT To:<oscar@old.example>\n"
    "<<< 550 5.1.1 <oscar@old.example>... User unknown\n"
    "550 5.1.1 <oscar@old.example>... User unknown\n"
    "<<< 503 5.0.0 Need RCPT (recipient)\n";

static const char plain_no_enh[] = "From: postmaster@tiny.example\n"
                                   "Subject: Undeliverable mail\n"
                                   "\n"
                                   "Your message to peggy@tiny.example could not be delivered.\n"
                                   "\n"
                                   "550 Requested action not taken: mailbox unavailable\n";

/* A status in the text, labelled, and a 4.x.x in a final failure. */
static const char status_text[] = "From: Mail Delivery System <mailer-daemon@box.example>\n"
                                  "Subject: Delivery failure\n"
                                  "\n"
                                  "Delivery failed for quinn@box.example.\n"
                                  "Status: 5.2.2 (mailbox full)\n";

static const char status_unlabelled[] =
    "From: robot@relay.example\n"
    "Subject: message\n"
    "\n"
    "Your message to rita@far.example failed permanently: smtp error 5.1.1 (no\n"
    "such mailbox at far.example).\n";

/* Postfix's text when the delivery-status part is missing. */
static const char postfix_no_dsn[] =
    "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\n"
    "Subject: Undelivered Mail Returned to Sender\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=\"P9\"\n"
    "\n"
    "--P9\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "This is the mail system at host mx.example.net.\n"
    "\n"
    "<sam@example.org> (expanded from <sales@example.org>): host\n"
    "    in.example.org[198.51.100.9] said: 552 5.2.2 <sam@example.org>: Mailbox\n"
    "    full (in reply to RCPT TO command)\n"
    "\n"
    "<tom@gone.example>: Host or domain name not found. Name service error for\n"
    "    name=gone.example type=MX: Host not found, try again\n"
    "--P9\n"
    "Content-Type: text/rfc822-headers\n"
    "\n"
    "Message-ID: <0190f0c1a2b3c4df@relay.ringpost.test>\n"
    "--P9--\n";

/* A bounce forwarded by a person: the DSN is inside an attached message. */
static const char forwarded[] =
    "From: Uma <uma@shop.example>\n"
    "Subject: Fwd: Undelivered Mail Returned to Sender\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
    "\n"
    "--outer\n"
    "Content-Type: text/plain\n"
    "\n"
    "What does this mean? 550 people did not get it.\n"
    "--outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: MAILER-DAEMON@mail.example.net\n"
    "Content-Type: multipart/report; report-type=delivery-status; boundary=\"inner\"\n"
    "\n"
    "--inner\n"
    "Content-Type: message/delivery-status\n"
    "\n"
    "Reporting-MTA: dns; mail.example.net\n"
    "\n"
    "Final-Recipient: RFC822; <victor@example.org>\n"
    "Action: failed\n"
    "Diagnostic-Code: smtp; 550 User unknown\n"
    "--inner\n"
    "Content-Type: text/rfc822-headers\n"
    "\n"
    "Message-ID: <0190f0c1a2b3c4e0@relay.ringpost.test>\n"
    "--inner--\n"
    "--outer--\n";

/* Yahoo's old layout: "554: delivery error: ...", no enhanced code. */
static const char yahoo_text[] =
    "From: MAILER-DAEMON@yahoo.com\n"
    "Subject: Failure Notice\n"
    "\n"
    "Sorry, we were unable to deliver your message to the following address.\n"
    "\n"
    "<yuri@yahoo.example>:\n"
    "554: delivery error: dd This user doesn't have a yahoo.example account "
    "(yuri@yahoo.example) [0] - mta1234.mail.ne1.yahoo.com\n"
    "\n"
    "--- Below this line is a copy of the message.\n"
    "\n"
    "Message-ID: <0190f0c1a2b3c4e1@relay.ringpost.test>\n";

/* The details in the second text part, the first only a preface. */
static const char second_text[] = "From: postmaster@example.org\n"
                                  "Subject: Notification\n"
                                  "Content-Type: multipart/mixed; boundary=t\n"
                                  "\n"
                                  "--t\n"
                                  "Content-Type: text/plain\n"
                                  "\n"
                                  "This is an automatically generated notification.\n"
                                  "--t\n"
                                  "Content-Type: text/plain\n"
                                  "\n"
                                  "Delivery to zoe@example.org failed permanently.\n"
                                  "Reason: 550 5.2.1 Mailbox disabled\n"
                                  "--t--\n";

/* Older Exchange: the status and reply inside "<host #5.1.1 smtp;...>". */
static const char exchange_text[] =
    "From: System Administrator <postmaster@corp.example>\n"
    "Subject: Undeliverable: Our May offers\n"
    "\n"
    "Your message did not reach some or all of the intended recipients.\n"
    "\n"
    "The following recipient(s) cannot be reached:\n"
    "\n"
    "      uma@corp.example on 5/14/2024 10:00 AM\n"
    "            The e-mail account does not exist at the organization this message was\n"
    "            sent to.\n"
    "            <mail.corp.example #5.1.1 smtp;550 5.1.1 RESOLVER.ADR.RecipNotFound; not "
    "found>\n";

/* A damaged DSN: one group for two recipients, lower-case field names,
 * names with a blank before the colon, no Status (derived). */
static const char dsn_damaged[] =
    "Content-Type: multipart/report; report-type=delivery-status; boundary=x\n"
    "\n"
    "--x\n"
    "Content-Type: Message/Delivery-Status\n"
    "\n"
    "reporting-mta: dns; mx.example\n"
    "final-recipient: rfc822; wendy@example.org\n"
    "action: FAILED\n"
    "diagnostic-code: smtp; 550 5.1.2 domain not found\n"
    "final-recipient : rfc822; xavier@example.org\n"
    "action : failed\n"
    "diagnostic-code: smtp; 554 transaction failed\n"
    "--x--\n";

/* ---- helpers ------------------------------------------------------------ */

/* exact - a malloc'd copy of msg with bare LF (or CRLF when crlf), of
 * exactly its length: no NUL after it, so ASan catches a read past it. */
static char *exact(const char *msg, size_t len, bool crlf, size_t *out_len)
{
	size_t n = len;
	if (crlf)
		for (size_t i = 0; i < len; i++)
			n += msg[i] == '\n';
	char *p = malloc(n ? n : 1);
	cr_assert_not_null(p);
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (crlf && msg[i] == '\n')
			p[o++] = '\r';
		p[o++] = msg[i];
	}
	*out_len = n;
	return p;
}

static void check_string(const char *what, const char *s, size_t size)
{
	size_t n = strnlen(s, size);
	cr_assert_lt(n, size, "%s is not NUL-terminated", what);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		cr_assert(c >= 32 && c != 127, "%s has control byte 0x%02x at %zu", what, c, i);
	}
	cr_assert(n == 0 || (s[0] != ' ' && s[n - 1] != ' '), "%s is not trimmed: '%s'", what, s);
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = rp_utf8_len((const unsigned char *)s + i, n - i, &cp);
		cr_assert_gt(l, 0, "%s is not UTF-8 at %zu", what, i);
		i += l;
	}
}

#define CHECK_STR(r, field) check_string(#field, (r)->field, sizeof((r)->field))

/* check_report - what every report promises, whatever the input. */
static void check_report(const struct bounce_report *r, bool ok)
{
	cr_assert_eq(ok, r->kind != BOUNCE_NONE, "return value and kind disagree");
	cr_assert_eq(ok, r->nrcpt > 0, "return value and nrcpt disagree");
	cr_assert_leq(r->nrcpt, BOUNCE_MAX_RCPT);
	enum bounce_kind worst = BOUNCE_NONE;
	for (unsigned i = 0; i < r->nrcpt; i++) {
		const struct bounce_rcpt *p = &r->rcpt[i];
		cr_assert_neq(p->kind, BOUNCE_NONE, "rcpt %u has no kind", i);
		worst = p->kind > worst ? p->kind : worst;
		CHECK_STR(p, status);
		CHECK_STR(p, final_rcpt);
		CHECK_STR(p, original_rcpt);
		CHECK_STR(p, diag);
		CHECK_STR(p, remote_mta);
		cr_assert(p->kind == BOUNCE_COMPLAINT || p->status[0], "rcpt %u has no status", i);
	}
	if (!r->rcpt_dropped)
		cr_assert_eq(r->kind, worst, "the verdict is not the worst recipient");
	CHECK_STR(r, original_message_id);
	CHECK_STR(r, reporting_mta);
	CHECK_STR(r, envelope_id);
	CHECK_STR(r, feedback_type);
	CHECK_STR(r, arf_original_rcpt);
	CHECK_STR(r, arf_original_mail_from);
	cr_assert_str_eq(bounce_kind_name(r->kind), bounce_kind_name(r->kind)); /* named */
}

/* parse - bounce_parse over an exact copy, with the report checked. */
static bool parse(const char *msg, size_t len, bool crlf, struct bounce_report *r)
{
	size_t n;
	char *p = exact(msg, len, crlf, &n);
	memset(r, 0xa5, sizeof(*r));
	bool ok = bounce_parse(p, n, r);
	free(p);
	check_report(r, ok);
	return ok;
}

/* ---- the samples, table-driven ----------------------------------------- */

struct want_rcpt {
	const char *addr;
	const char *status;
	int code;
	const char *diag; /* exact; NULL: not checked */
	const char *remote;
	enum bounce_kind kind;
};

struct sample {
	const char *name;
	const char *msg;
	enum bounce_kind kind;
	enum bounce_format format;
	unsigned nrcpt;
	const char *msgid;
	struct want_rcpt r[2];
};

#define F  BOUNCE_FAILED
#define D  BOUNCE_DELAYED
#define OK BOUNCE_DELIVERED
#define C  BOUNCE_COMPLAINT

static const struct sample samples[] = {
	{ "postfix dsn",
	  postfix_dsn,
	  F,
	  BOUNCE_FMT_DSN,
	  1,
	  "0190f0c1a2b3c4d5@relay.ringpost.test",
	  { { "alice@example.org", "5.1.1", 550,
	      "550 5.1.1 <alice@example.org>: Recipient address rejected: User unknown in "
	      "virtual mailbox table",
	      "mx1.example.org", F } } },
	{ "exim",
	  exim_bounce,
	  F,
	  BOUNCE_FMT_EXIM,
	  2,
	  "0190f0c1a2b3c4d6@relay.ringpost.test",
	  { { "bob@example.com", "5.1.1", 550,
	      "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
	      "mx.example.com", F },
	    { "carol@nowhere.example", "5.0.0", 0, "Unrouteable address", "", F } } },
	{ "exim delay",
	  exim_delay,
	  D,
	  BOUNCE_FMT_EXIM,
	  1,
	  "",
	  { { "mallory@slow.example", "4.7.1", 451, "451 4.7.1 Greylisted, please try again later",
	      "mx.slow.example", D } } },
	{ "gmail text",
	  gmail_text,
	  F,
	  BOUNCE_FMT_TEXT_REPLY,
	  1,
	  "0190f0c1a2b3c4d7@relay.ringpost.test",
	  { { "dave@example.com", "5.1.1", 550,
	      "550 5.1.1 The email account that you tried to reach does not exist. Please try "
	      "double-checking the recipient's email address for typos or unnecessary spaces. "
	      "Learn more at https://support.google.com/mail/?p=NoSuchUser d2si123 - gsmtp",
	      "", F } } },
	{ "gmail dsn",
	  gmail_dsn,
	  F,
	  BOUNCE_FMT_DSN,
	  1,
	  "0190f0c1a2b3c4d8@relay.ringpost.test",
	  { { "nina@example.com", "5.1.1", 550,
	      "550 5.1.1 The email account that you tried to reach does not exist. Please try "
	      "double-checking the recipient's email address for typos or unnecessary spaces. "
	      "Learn more at https://support.google.com/mail/?p=NoSuchUser x1si2 - gsmtp",
	      "mx.example.com. (192.0.2.31, the server for the domain example.com.)", F } } },
	{ "o365 dsn",
	  o365_dsn,
	  F,
	  BOUNCE_FMT_DSN,
	  1,
	  "0190f0c1a2b3c4d9@relay.ringpost.test",
	  { { "erin@contoso.com", "5.1.10", 550,
	      "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient erin@contoso.com not found "
	      "by SMTP address lookup",
	      "", F } } },
	{ "o365 text",
	  o365_text,
	  F,
	  BOUNCE_FMT_TEXT_REPLY,
	  1,
	  "0190f0c1a2b3c4da@relay.ringpost.test",
	  { { "erin@contoso.com", "5.1.10", 550,
	      "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient erin@contoso.com not found "
	      "by SMTP address lookup",
	      "", F } } },
	{ "qmail",
	  qmail_bounce,
	  F,
	  BOUNCE_FMT_QMAIL,
	  2,
	  "0190f0c1a2b3c4db@relay.ringpost.test",
	  { { "frank@example.net", "5.1.1", 550, "550 5.1.1 <frank@example.net>... User unknown",
	      "192.0.2.40", F },
	    { "grace@nonexistent.example", "5.1.2", 0,
	      "Sorry, I couldn't find any host named nonexistent.example. (#5.1.2)", "", F } } },
	{ "delayed dsn",
	  delayed_dsn,
	  D,
	  BOUNCE_FMT_DSN,
	  1,
	  "",
	  { { "henry@example.com", "4.4.1", 0,
	      "connect to mx.example.com[192.0.2.50]:25: Connection timed out", "", D } } },
	{ "delivered dsn",
	  delivered_dsn,
	  OK,
	  BOUNCE_FMT_DSN,
	  1,
	  "",
	  { { "ivan@example.com", "2.0.0", 250, "250 2.0.0 Ok: queued as 4Vf1", "mx.example.com",
	      OK } } },
	{ "arf yahoo",
	  arf_yahoo,
	  C,
	  BOUNCE_FMT_ARF,
	  1,
	  "0190f0c1a2b3c4dd@relay.ringpost.test",
	  { { "judy@yahoo.example", "", 0, "", "", C } } },
	{ "arf aol redacted",
	  arf_aol,
	  C,
	  BOUNCE_FMT_ARF,
	  1,
	  "0190f0c1a2b3c4de@relay.ringpost.test",
	  { { "kate@aol.example", "", 0, "", "", C } } },
	{ "arf auth-failure", arf_auth_failure, BOUNCE_NONE, BOUNCE_FMT_ARF, 0, "", { { 0 } } },
	{ "auto-reply", autoreply, BOUNCE_NONE, BOUNCE_FMT_NONE, 0, "", { { 0 } } },
	{ "vacation", vacation, BOUNCE_NONE, BOUNCE_FMT_NONE, 0, "", { { 0 } } },
	{ "auto-reply quoting a bounce",
	  autoreply_quoting,
	  BOUNCE_NONE,
	  BOUNCE_FMT_NONE,
	  0,
	  "",
	  { { 0 } } },
	{ "plain 5xx transcript",
	  plain_5xx,
	  F,
	  BOUNCE_FMT_TEXT_REPLY,
	  1,
	  "",
	  { { "oscar@old.example", "5.1.1", 550, "550 5.1.1 <oscar@old.example>... User unknown",
	      "", F } } },
	{ "plain 5xx no enh",
	  plain_no_enh,
	  F,
	  BOUNCE_FMT_TEXT_REPLY,
	  1,
	  "",
	  { { "peggy@tiny.example", "5.0.0", 550,
	      "550 Requested action not taken: mailbox unavailable", "", F } } },
	{ "status labelled",
	  status_text,
	  F,
	  BOUNCE_FMT_TEXT_STATUS,
	  1,
	  "",
	  { { "quinn@box.example", "5.2.2", 0, "Status: 5.2.2 (mailbox full)", "", F } } },
	{ "status unlabelled",
	  status_unlabelled,
	  F,
	  BOUNCE_FMT_TEXT_STATUS,
	  1,
	  "",
	  { { "rita@far.example", "5.1.1", 0, NULL, "", F } } },
	{ "postfix without dsn",
	  postfix_no_dsn,
	  F,
	  BOUNCE_FMT_POSTFIX,
	  2,
	  "0190f0c1a2b3c4df@relay.ringpost.test",
	  { { "sam@example.org", "5.2.2", 552, "552 5.2.2 <sam@example.org>: Mailbox full",
	      "in.example.org", F },
	    { "tom@gone.example", "5.0.0", 0,
	      "Host or domain name not found. Name service error for name=gone.example "
	      "type=MX: Host not found, try again",
	      "", F } } },
	{ "forwarded bounce",
	  forwarded,
	  F,
	  BOUNCE_FMT_DSN,
	  1,
	  "0190f0c1a2b3c4e0@relay.ringpost.test",
	  { { "victor@example.org", "5.0.0", 550, "550 User unknown", "", F } } },
	{ "yahoo text",
	  yahoo_text,
	  F,
	  BOUNCE_FMT_TEXT_REPLY,
	  1,
	  "0190f0c1a2b3c4e1@relay.ringpost.test",
	  { { "yuri@yahoo.example", "5.0.0", 554,
	      "554: delivery error: dd This user doesn't have a yahoo.example account "
	      "(yuri@yahoo.example) [0] - mta1234.mail.ne1.yahoo.com",
	      "", F } } },
	{ "second text part",
	  second_text,
	  F,
	  BOUNCE_FMT_TEXT_REPLY,
	  1,
	  "",
	  { { "zoe@example.org", "5.2.1", 550, "550 5.2.1 Mailbox disabled", "", F } } },
	{ "exchange text",
	  exchange_text,
	  F,
	  BOUNCE_FMT_TEXT_REPLY,
	  1,
	  "",
	  { { "uma@corp.example", "5.1.1", 550, "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
	      "", F } } },
	{ "damaged dsn",
	  dsn_damaged,
	  F,
	  BOUNCE_FMT_DSN,
	  2,
	  "",
	  { { "wendy@example.org", "5.1.2", 550, "550 5.1.2 domain not found", "", F },
	    { "xavier@example.org", "5.0.0", 554, "554 transaction failed", "", F } } },
};

static void check_sample(const struct sample *s, bool crlf)
{
	struct bounce_report r;
	const char *le = crlf ? "CRLF" : "LF";
	bool ok = parse(s->msg, strlen(s->msg), crlf, &r);
	cr_assert_eq(ok, s->nrcpt > 0, "%s (%s): returned %d", s->name, le, ok);
	cr_assert_eq(r.kind, s->kind, "%s (%s): kind %s, want %s", s->name, le,
	             bounce_kind_name(r.kind), bounce_kind_name(s->kind));
	cr_assert_eq(r.format, s->format, "%s (%s): format %s, want %s", s->name, le,
	             bounce_format_name(r.format), bounce_format_name(s->format));
	cr_assert_eq(r.nrcpt, s->nrcpt, "%s (%s): %u recipients, want %u", s->name, le, r.nrcpt,
	             s->nrcpt);
	cr_assert_str_eq(r.original_message_id, s->msgid, "%s (%s): message-id '%s'", s->name, le,
	                 r.original_message_id);
	for (unsigned i = 0; i < s->nrcpt && i < 2; i++) {
		const struct want_rcpt *w = &s->r[i];
		const struct bounce_rcpt *g = &r.rcpt[i];
		cr_assert_str_eq(g->final_rcpt, w->addr, "%s (%s) rcpt %u: address '%s'", s->name,
		                 le, i, g->final_rcpt);
		cr_assert_str_eq(g->status, w->status, "%s (%s) rcpt %u: status '%s'", s->name, le,
		                 i, g->status);
		cr_assert_eq(g->smtp_code, w->code, "%s (%s) rcpt %u: code %d", s->name, le, i,
		             g->smtp_code);
		if (w->diag)
			cr_assert_str_eq(g->diag, w->diag,
			                 "%s (%s) rcpt %u: diag\n  '%s'\nwant\n  '%s'", s->name, le,
			                 i, g->diag, w->diag);
		cr_assert_str_eq(g->remote_mta, w->remote, "%s (%s) rcpt %u: remote '%s'", s->name,
		                 le, i, g->remote_mta);
		cr_assert_eq(g->kind, w->kind, "%s (%s) rcpt %u: kind %s", s->name, le, i,
		             bounce_kind_name(g->kind));
	}
}

Test(bounce, samples_lf)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(samples); i++)
		check_sample(&samples[i], false);
}

Test(bounce, samples_crlf)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(samples); i++)
		check_sample(&samples[i], true);
}

Test(bounce, report_details)
{
	struct bounce_report r;
	parse(postfix_dsn, strlen(postfix_dsn), true, &r);
	cr_assert_str_eq(r.rcpt[0].original_rcpt, "Alice@Example.org");
	cr_assert_str_eq(r.reporting_mta, "mail.example.net");
	cr_assert(r.auto_reply, "a DSN calls itself auto-replied");
	cr_assert_not(r.limited);
	parse(delayed_dsn, strlen(delayed_dsn), true, &r);
	cr_assert_str_eq(r.envelope_id, "0190f0c1a2b3c4dc");
	parse(arf_yahoo, strlen(arf_yahoo), true, &r);
	cr_assert_str_eq(r.feedback_type, "abuse");
	cr_assert_str_eq(r.arf_original_rcpt, "judy@yahoo.example");
	cr_assert_str_eq(r.arf_original_mail_from, VERP);
	parse(arf_aol, strlen(arf_aol), true, &r);
	cr_assert_str_eq(r.feedback_type, "abuse", "lower case");
	parse(arf_auth_failure, strlen(arf_auth_failure), true, &r);
	cr_assert_str_eq(r.feedback_type, "auth-failure");
	cr_assert_str_eq(r.arf_original_rcpt, "liz@receiver.example");
	parse(autoreply, strlen(autoreply), false, &r);
	cr_assert(r.auto_reply);
	parse(vacation, strlen(vacation), false, &r);
	cr_assert(r.auto_reply);
}

Test(bounce, names)
{
	cr_assert_str_eq(bounce_kind_name(BOUNCE_NONE), "none");
	cr_assert_str_eq(bounce_kind_name(BOUNCE_FAILED), "failed");
	cr_assert_str_eq(bounce_kind_name(BOUNCE_DELAYED), "delayed");
	cr_assert_str_eq(bounce_kind_name(BOUNCE_DELIVERED), "delivered");
	cr_assert_str_eq(bounce_kind_name(BOUNCE_COMPLAINT), "complaint");
	cr_assert_str_eq(bounce_kind_name((enum bounce_kind)77), "unknown");
	cr_assert_str_eq(bounce_format_name(BOUNCE_FMT_DSN), "dsn");
	cr_assert_str_eq(bounce_format_name(BOUNCE_FMT_TEXT_STATUS), "text-status");
	cr_assert_str_eq(bounce_format_name((enum bounce_format)77), "unknown");
	for (int f = BOUNCE_FMT_NONE; f <= BOUNCE_FMT_TEXT_STATUS; f++)
		cr_assert_str_neq(bounce_format_name((enum bounce_format)f), "unknown");
}

/* ringpost's own DSNs (queue/dsn.c) read back: what we send, we understand. */
Test(bounce, reads_our_own_dsns)
{
	static const char orig[] = "From: <news@shop.example>\r\nTo: <a@dest.example>\r\n"
	                           "Message-ID: <0190f0c1a2b3c4e2@relay.ringpost.test>\r\n"
	                           "Subject: hi\r\n\r\nbody 550 5.7.1 decoy\r\n";
	const struct dsn_rcpt rcpts[] = {
		{ .addr = "a@dest.example",
		  .addr_len = 14,
		  .orcpt = "rfc822;A@Dest.example",
		  .orcpt_len = 21,
		  .action = "failed",
		  .status = "5.1.1",
		  .diag = "550 5.1.1 <a@dest.example>: no such user",
		  .diag_smtp = true,
		  .remote = "mx.dest.example[192.0.2.1]:25" },
		{ .addr = "b@slow.example",
		  .addr_len = 14,
		  .action = "delayed",
		  .status = "4.4.1",
		  .diag = "connection refused",
		  .remote = "192.0.2.2:25" },
	};
	for (int full = 0; full < 2; full++) {
		const struct dsn_info info = {
			.reporting_mta = "relay.ringpost.test",
			.queue_id = 0x0190f0c1a2b3c4e2ull,
			.envid = "env-7",
			.envid_len = 5,
			.arrival_ms = 1715680800000ull,
			.now_ms = 1715680900000ull,
			.sender = VERP,
			.sender_len = strlen(VERP),
			.rcpts = rcpts,
			.nrcpts = 2,
			.original = orig,
			.original_len =
			    full ? sizeof(orig) - 1 : (size_t)(strstr(orig, "\r\n\r\n") + 2 - orig),
			.full = full,
		};
		struct buf b = { 0 };
		dsn_build(&info, &b);
		struct bounce_report r;
		cr_assert(parse(buf_head(&b), buf_used(&b), false, &r));
		buf_free(&b);
		cr_assert_eq(r.format, BOUNCE_FMT_DSN);
		cr_assert_eq(r.kind, BOUNCE_FAILED);
		cr_assert_eq(r.nrcpt, 2);
		cr_assert_str_eq(r.reporting_mta, "relay.ringpost.test");
		cr_assert_str_eq(r.envelope_id, "env-7");
		cr_assert_str_eq(r.original_message_id, "0190f0c1a2b3c4e2@relay.ringpost.test");
		cr_assert_str_eq(r.rcpt[0].final_rcpt, "a@dest.example");
		cr_assert_str_eq(r.rcpt[0].original_rcpt, "A@Dest.example");
		cr_assert_str_eq(r.rcpt[0].status, "5.1.1");
		cr_assert_eq(r.rcpt[0].smtp_code, 550);
		cr_assert_str_eq(r.rcpt[0].diag, "550 5.1.1 <a@dest.example>: no such user");
		cr_assert_str_eq(r.rcpt[0].remote_mta, "mx.dest.example");
		cr_assert_eq(r.rcpt[1].kind, BOUNCE_DELAYED);
		cr_assert_str_eq(r.rcpt[1].status, "4.4.1");
		cr_assert_eq(r.rcpt[1].smtp_code, 0);
		cr_assert_str_eq(r.rcpt[1].diag, "connection refused");
		cr_assert_str_eq(r.rcpt[1].remote_mta, "[192.0.2.2]");
	}
}

/* ---- DSN fields, one at a time ------------------------------------------ */

struct dsn_case {
	const char *fields; /* the per-recipient group */
	enum bounce_kind kind;
	const char *addr, *status;
	int code;
	const char *diag;
};

static const struct dsn_case dsn_cases[] = {
	/* Status derived from the Diagnostic-Code's enhanced code, then its code. */
	{ "Final-Recipient: rfc822; a@x.example\nAction: failed\n"
	  "Diagnostic-Code: smtp; 550 5.1.1 no such user\n",
	  F, "a@x.example", "5.1.1", 550, "550 5.1.1 no such user" },
	{ "Final-Recipient: rfc822; a@x.example\nAction: failed\n"
	  "Diagnostic-Code: smtp; 550 no such user\n",
	  F, "a@x.example", "5.0.0", 550, "550 no such user" },
	{ "Final-Recipient: rfc822; a@x.example\nAction: failed\n", F, "a@x.example", "5.0.0", 0,
	  "" },
	{ "Final-Recipient: rfc822; a@x.example\nAction: delayed\n", D, "a@x.example", "4.0.0", 0,
	  "" },
	/* An enhanced code of another class than the reply is not used. */
	{ "Final-Recipient: rfc822; a@x.example\nAction: failed\n"
	  "Diagnostic-Code: smtp; 550 4.1.1 odd\n",
	  F, "a@x.example", "5.0.0", 550, "550 4.1.1 odd" },
	/* No Action: the status decides. */
	{ "Final-Recipient: rfc822; a@x.example\nStatus: 4.2.2\n", D, "a@x.example", "4.2.2", 0,
	  "" },
	{ "Final-Recipient: rfc822; a@x.example\nDiagnostic-Code: smtp; 552 5.2.2 full\n", F,
	  "a@x.example", "5.2.2", 552, "552 5.2.2 full" },
	/* Action beats status class: expired after 4xx is a failure. */
	{ "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 4.4.7\n", F, "a@x.example",
	  "4.4.7", 0, "" },
	/* A status with a comment; a bad status is derived instead. */
	{ "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.7.1 (denied)\n", F,
	  "a@x.example", "5.7.1", 0, "" },
	{ "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1.1\n", F,
	  "a@x.example", "5.0.0", 0, "" },
	{ "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: five\n"
	  "Diagnostic-Code: smtp; 553 5.1.3 bad syntax\n",
	  F, "a@x.example", "5.1.3", 553, "553 5.1.3 bad syntax" },
	/* Addresses: type and brackets stripped, comments dropped, none at all. */
	{ "Final-Recipient: RFC822;<B@X.example>\nAction: failed\n", F, "B@X.example", "5.0.0", 0,
	  "" },
	{ "Final-Recipient: rfc822; c@x.example (Carl)\nAction: failed\n", F, "c@x.example",
	  "5.0.0", 0, "" },
	{ "Final-Recipient: d@x.example\nAction: failed\n", F, "d@x.example", "5.0.0", 0, "" },
	{ "Final-Recipient: rfc822; \"e f\"@x.example\nAction: failed\n", F, "\"e f\"@x.example",
	  "5.0.0", 0, "" },
	{ "Action: failed\nStatus: 5.1.1\n", F, "", "5.1.1", 0, "" },
	{ "Original-Recipient: rfc822; h@x.example\nAction: failed\n", F, "h@x.example", "5.0.0", 0,
	  "" },
	/* Folded everything, tabs, odd case. */
	{ "FINAL-RECIPIENT:\n\trfc822;\n\tf@x.example\nACTION:\n failed\nSTATUS:\n 5.1.1\n"
	  "DIAGNOSTIC-CODE: smtp;\n\t550\n\t5.1.1\tgone\n",
	  F, "f@x.example", "5.1.1", 550, "550 5.1.1 gone" },
	/* Unknown action, no status: nothing to say about this recipient. */
	{ "Final-Recipient: rfc822; g@x.example\nAction: pondering\n", BOUNCE_NONE, "", "", 0, "" },
};

Test(bounce, dsn_fields)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(dsn_cases); i++) {
		const struct dsn_case *c = &dsn_cases[i];
		struct buf b = { 0 };
		buf_printf(&b,
		           "Content-Type: multipart/report; report-type=delivery-status; "
		           "boundary=zz\n\n--zz\nContent-Type: message/delivery-status\n\n"
		           "Reporting-MTA: dns; mx.example\n\n%s--zz--\n",
		           c->fields);
		struct bounce_report r;
		bool ok = parse(buf_head(&b), buf_used(&b), i % 2, &r);
		buf_free(&b);
		cr_assert_eq(r.kind, c->kind, "case %zu: kind %s", i, bounce_kind_name(r.kind));
		if (c->kind == BOUNCE_NONE) {
			cr_assert_not(ok, "case %zu", i);
			continue;
		}
		cr_assert_eq(r.nrcpt, 1, "case %zu: %u recipients", i, r.nrcpt);
		cr_assert_str_eq(r.rcpt[0].final_rcpt, c->addr, "case %zu: addr '%s'", i,
		                 r.rcpt[0].final_rcpt);
		cr_assert_str_eq(r.rcpt[0].status, c->status, "case %zu: status '%s'", i,
		                 r.rcpt[0].status);
		cr_assert_eq(r.rcpt[0].smtp_code, c->code, "case %zu: code %d", i,
		             r.rcpt[0].smtp_code);
		cr_assert_str_eq(r.rcpt[0].diag, c->diag, "case %zu: diag '%s'", i, r.rcpt[0].diag);
	}
}

Test(bounce, many_recipients_worst_wins)
{
	struct buf b = { 0 };
	buf_puts(&b, "Content-Type: multipart/report; boundary=m\n\n--m\n"
	             "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n");
	for (int i = 0; i < 40; i++)
		buf_printf(&b, "\nFinal-Recipient: rfc822; r%d@x.example\nAction: %s\n", i,
		           i == 30 ? "failed"
		           : i % 2 ? "delayed"
		                   : "delivered");
	buf_puts(&b, "--m--\n");
	struct bounce_report r;
	cr_assert(parse(buf_head(&b), buf_used(&b), true, &r));
	buf_free(&b);
	cr_assert_eq(r.nrcpt, BOUNCE_MAX_RCPT);
	cr_assert_eq(r.rcpt_dropped, 40 - BOUNCE_MAX_RCPT);
	cr_assert_eq(r.kind, BOUNCE_FAILED, "a dropped recipient still counts in the verdict");
	cr_assert_str_eq(r.rcpt[0].final_rcpt, "r0@x.example");
	cr_assert_eq(r.rcpt[0].kind, BOUNCE_DELIVERED);
	cr_assert_eq(r.rcpt[1].kind, BOUNCE_DELAYED);
	cr_assert_str_eq(r.rcpt[15].final_rcpt, "r15@x.example");
}

/* ---- output strings ----------------------------------------------------- */

Test(bounce, strings_are_cleaned_and_cut)
{
	struct buf b = { 0 };
	buf_puts(&b, "Content-Type: multipart/report; boundary=m\n\n--m\n"
	             "Content-Type: message/delivery-status\n\n"
	             "Reporting-MTA: dns; mx\n\n"
	             "Final-Recipient: rfc822; a\x01@b\x7f.example\n"
	             "Action: failed\n"
	             "Remote-MTA: dns; mx\x0b.example\n"
	             "Diagnostic-Code: smtp; 550 5.1.1 caf\xc3\xa9 \xff\xfe bad\tutf8\r\n"
	             "   and\r\r\n \r  folded\n"
	             "Original-Recipient: rfc822;");
	/* A diagnostic longer than the field, ending in multi-byte characters. */
	for (int i = 0; i < 300; i++)
		buf_puts(&b, "\xe2\x82\xac");
	buf_puts(&b, "\n--m--\n");
	struct bounce_report r;
	cr_assert(parse(buf_head(&b), buf_used(&b), false, &r));
	buf_free(&b);
	cr_assert_str_eq(r.rcpt[0].final_rcpt, "a@b.example");
	cr_assert_str_eq(r.rcpt[0].remote_mta, "mx.example");
	cr_assert_str_eq(r.rcpt[0].diag, "550 5.1.1 caf\xc3\xa9 ?? bad utf8 and folded");
	size_t n = strlen(r.rcpt[0].original_rcpt);
	cr_assert_eq(n, 255 / 3 * 3, "cut at a character boundary: %zu bytes", n);
}

/* ---- damaged and hostile input ------------------------------------------ */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

Test(bounce, every_truncation)
{
	/* Every prefix of every sample: never a crash, a read past the end,
	 * or a broken string; the Postfix DSN is recognised as soon as its
	 * Action line is complete. */
	for (size_t s = 0; s < RP_ARRAY_LEN(samples); s++) {
		const char *m = samples[s].msg;
		size_t len = strlen(m);
		for (size_t cut = 0; cut <= len; cut++) {
			struct bounce_report r;
			parse(m, cut, s % 2, &r);
		}
	}
	const char *m = postfix_dsn;
	const char *act = strstr(m, "Action: failed\n") + strlen("Action: failed\n");
	struct bounce_report r;
	cr_assert(parse(m, (size_t)(act - m), false, &r));
	cr_assert_eq(r.kind, BOUNCE_FAILED);
	cr_assert_eq(r.format, BOUNCE_FMT_DSN);
	cr_assert_str_eq(r.rcpt[0].final_rcpt, "alice@example.org");
}

static uint64_t xorshift(uint64_t *st)
{
	uint64_t x = *st;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *st = x;
}

Test(bounce, random_mutations)
{
	/* Samples with bytes changed, ranges cut out or repeated, structure
	 * characters sprinkled in: every report still keeps its promises. */
	static const char bytes[] = { '\0', '\n', '\r', '-', ':', ';', '<',  '>',       '@',
		                      '=',  '"',  ' ',  '5', '.', '(', '\t', (char)0xff };
	uint64_t st = 0x2545f4914f6cdd1dull;
	struct buf b = { 0 };
	for (size_t s = 0; s < RP_ARRAY_LEN(samples); s++) {
		const char *m = samples[s].msg;
		size_t len = strlen(m);
		for (int round = 0; round < 300; round++) {
			buf_reset(&b);
			buf_append(&b, m, len);
			for (int k = 0; k < 1 + round % 8; k++) {
				size_t n = buf_used(&b), at = n ? xorshift(&st) % n : 0;
				size_t span = n - at ? xorshift(&st) % RP_MIN(n - at, 200) : 0;
				char *p = buf_head(&b);
				switch (xorshift(&st) % 4) {
				case 0:
					if (n)
						p[at] = bytes[xorshift(&st) % sizeof(bytes)];
					break;
				case 1: /* cut a range */
					memmove(p + at, p + at + span, n - at - span);
					b.len -= span;
					break;
				default: { /* repeat a range at the end */
					char tmp[200];
					memcpy(tmp, p + at, span);
					buf_append(&b, tmp, span);
					break;
				}
				}
			}
			struct bounce_report r;
			parse(buf_head(&b), buf_used(&b), round % 2, &r);
		}
	}
	buf_free(&b);
}

static const char dsn_part[] = "Content-Type: message/delivery-status\n\n"
                               "Reporting-MTA: dns; mx\n\n"
                               "Final-Recipient: rfc822; zed@example.org\n"
                               "Action: failed\nStatus: 5.1.1\n";

struct bad_case {
	const char *name;
	const char *msg;
	bool ok; /* recognised as a failure for zed@example.org */
};

static const struct bad_case bad_cases[] = {
	{ "missing boundary",
	  "Content-Type: multipart/report; report-type=delivery-status\n\n"
	  "preamble\n--b1\nContent-Type: text/plain\n\nhello\n--b1\n"
	  "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
	  "Final-Recipient: rfc822; zed@example.org\nAction: failed\nStatus: 5.1.1\n--b1--\n",
	  true },
	{ "boundary never closed",
	  "Content-Type: multipart/report; boundary=\"b2\"\n\n--b2\n"
	  "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
	  "Final-Recipient: rfc822; zed@example.org\nAction: failed\nStatus: 5.1.1\n",
	  true },
	{ "boundary never present",
	  "Content-Type: multipart/report; boundary=\"b3\"\n\nno parts at all\n", false },
	{ "boundary with blanks after it and a look-alike",
	  "Content-Type: multipart/report; boundary=b4\n\n--b4x\nnot a part\n--b4  \t\n"
	  "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
	  "Final-Recipient: rfc822; zed@example.org\nAction: failed\nStatus: 5.1.1\n--b4-- \n",
	  true },
	{ "empty boundary parameter", "Content-Type: multipart/mixed; boundary=\"\"\n\n--\n--\n",
	  false },
	{ "quoted boundary with escapes and a comment",
	  "Content-Type: multipart/report (a comment; boundary=no); boundary=\"a\\\"b\"\n\n"
	  "--a\"b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
	  "Final-Recipient: rfc822; zed@example.org\nAction: failed\nStatus: 5.1.1\n--a\"b--\n",
	  true },
	{ "unterminated quoted boundary",
	  "Content-Type: multipart/report; boundary=\"abc\n\n--abc\n", false },
	{ "header only", "From: MAILER-DAEMON@x\nSubject: Undeliverable\n", false },
	{ "header only with blank line", "From: MAILER-DAEMON@x\nSubject: failure notice\n\n",
	  false },
	{ "no header", "\n\n\n", false },
	{ "only garbage", "\x01\x02\x03 ::: @@@ <<<>>> --\n-- \n--x\n", false },
	{ "base64 dsn with junk in it",
	  "Content-Type: multipart/report; boundary=b5\n\n--b5\n"
	  "Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
	  "UmVwb3J0aW5nLU1UQTogZG5zOyBteAoKRmluYWwtUmVjaXBpZW50OiByZmM4M!!!jI7IHplZEBleGFt\n"
	  "cGxlLm9yZwpBY3Rpb246IGZhaWxlZApTdGF0dXM6IDUuMS4xCg==\n--b5--\n",
	  true },
	{ "invalid base64 text",
	  "From: MAILER-DAEMON@x\nSubject: Undeliverable\n"
	  "Content-Transfer-Encoding: base64\n\n!!!! ???? ==== ####\n=A\n",
	  false },
	{ "base64 text, one stray char",
	  "From: MAILER-DAEMON@x\nSubject: Undeliverable\nContent-Transfer-Encoding: base64\n\n"
	  "NTUw\x01IDUuMS4xIDx6ZWRAZXhhbXBsZS5vcmc+IFVzZXIgdW5rbm93bgo=\n",
	  true },
	{ "quoted-printable with bad escapes",
	  "From: MAILER-DAEMON@x\nSubject: Undeliverable\n"
	  "Content-Transfer-Encoding: quoted-printable\n\n"
	  "=ZZ=4=\n550 5.1.1 <zed@example.org> User unkn=\nown =3\n=",
	  true },
	{ "multipart/report with no report part",
	  "Content-Type: multipart/report; boundary=b6\n\n--b6\nContent-Type: image/png\n\n"
	  "550 5.1.1 <zed@example.org> User unknown\n--b6--\n",
	  false },
	{ "encoded message/rfc822 is not entered",
	  "Content-Type: multipart/mixed; boundary=b7\n\n--b7\nContent-Type: message/rfc822\n"
	  "Content-Transfer-Encoding: "
	  "base64\n\nQ29udGVudC1UeXBlOiBtZXNzYWdlL2RlbGl2ZXJ5LXN0YXR1cwo=\n"
	  "--b7--\n",
	  false },
};

Test(bounce, damaged_input)
{
	for (size_t i = 0; i < RP_ARRAY_LEN(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		for (int crlf = 0; crlf < 2; crlf++) {
			struct bounce_report r;
			bool ok = parse(c->msg, strlen(c->msg), crlf, &r);
			cr_assert_eq(ok, c->ok, "%s (%s): returned %d", c->name,
			             crlf ? "CRLF" : "LF", ok);
			if (!ok)
				continue;
			cr_assert_eq(r.kind, BOUNCE_FAILED, "%s", c->name);
			cr_assert_str_eq(r.rcpt[0].final_rcpt, "zed@example.org", "%s: '%s'",
			                 c->name, r.rcpt[0].final_rcpt);
			cr_assert_str_eq(r.rcpt[0].status, "5.1.1", "%s", c->name);
		}
	}
}

Test(bounce, empty_and_null)
{
	struct bounce_report r;
	cr_assert_not(bounce_parse(NULL, 0, &r));
	cr_assert_eq(r.kind, BOUNCE_NONE);
	cr_assert_eq(r.format, BOUNCE_FMT_NONE);
	cr_assert_not(parse("", 0, false, &r));
	cr_assert_not(parse("\r\n", 2, false, &r));
}

Test(bounce, nul_bytes)
{
	static const char m[] = "From: MAILER-DAEMON@x\0.example\n"
	                        "X-Nul: \0\n"
	                        "Content-Type: multipart/report; boundary=\"nul\"\n\n"
	                        "--nul\nContent-Type: message/delivery-status\n\n"
	                        "Reporting-MTA: dns; m\0x\n\n"
	                        "Final-Recipient: rfc822; zed@exa\0mple.org\n"
	                        "Action: failed\nStatus: 5.1.1\n"
	                        "Diagnostic-Code: smtp; 550\0 5.1.1 nul\0 inside\n"
	                        "--nul--\n";
	struct bounce_report r;
	cr_assert(parse(m, sizeof(m) - 1, true, &r));
	cr_assert_str_eq(r.rcpt[0].final_rcpt, "zed@example.org");
	cr_assert_str_eq(r.reporting_mta, "mx");
	cr_assert_str_eq(r.rcpt[0].diag, "550 5.1.1 nul inside");
	/* NULs everywhere else: no crash, no stray bytes. */
	char junk[4096];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i % 7 == 0 ? 0 : "550 5.1.1 <a@b.c>\n--:"[i % 22]);
	parse(junk, sizeof(junk), false, &r);
}

/* nested - a DSN at depth levels of multipart/mixed. */
static void nested(struct buf *b, int levels)
{
	for (int i = 0; i < levels; i++)
		buf_printf(b, "Content-Type: multipart/mixed; boundary=\"L%d\"\n\n--L%d\n", i, i);
	buf_printf(b, "Content-Type: multipart/report; boundary=\"R\"\n\n--R\n%s--R--\n", dsn_part);
	for (int i = levels - 1; i >= 0; i--)
		buf_printf(b, "--L%d--\n", i);
}

Test(bounce, nesting_is_capped)
{
	struct bounce_report r;
	struct buf b = { 0 };
	nested(&b, 7); /* the DSN part is at depth 8: read */
	cr_assert(parse(buf_head(&b), buf_used(&b), true, &r));
	cr_assert_str_eq(r.rcpt[0].final_rcpt, "zed@example.org");
	cr_assert_not(r.limited);
	buf_reset(&b);
	nested(&b, 8); /* one level deeper: not read */
	cr_assert_not(parse(buf_head(&b), buf_used(&b), true, &r));
	cr_assert(r.limited);
	buf_reset(&b);
	nested(&b, 100);
	double t0 = now_s();
	cr_assert_not(parse(buf_head(&b), buf_used(&b), true, &r));
	cr_assert(r.limited);
	cr_assert_lt(now_s() - t0, 0.5 * SLOW);
	/* Attached messages count as levels too. */
	buf_reset(&b);
	for (int i = 0; i < 100; i++)
		buf_puts(&b, "Content-Type: message/rfc822\n\n");
	buf_printf(&b, "Content-Type: multipart/report; boundary=\"R\"\n\n--R\n%s--R--\n",
	           dsn_part);
	cr_assert_not(parse(buf_head(&b), buf_used(&b), true, &r));
	cr_assert(r.limited);
	buf_free(&b);
}

Test(bounce, ten_thousand_parts)
{
	struct buf b = { 0 };
	buf_puts(&b, "Content-Type: multipart/report; boundary=\"p\"\n\n");
	for (int i = 0; i < 10000; i++) {
		if (i == 10)
			buf_printf(&b, "--p\n%s", dsn_part);
		else
			buf_printf(&b, "--p\nContent-Type: text/x-part-%d\n\npart %d\n", i, i);
	}
	buf_puts(&b, "--p--\n");
	struct bounce_report r;
	double t0 = now_s();
	cr_assert(parse(buf_head(&b), buf_used(&b), false, &r));
	cr_assert_lt(now_s() - t0, 0.5 * SLOW);
	cr_assert(r.limited, "only BOUNCE_MAX_PARTS are looked at");
	cr_assert_str_eq(r.rcpt[0].final_rcpt, "zed@example.org");
	/* A DSN past the cap is not seen. */
	buf_reset(&b);
	buf_puts(&b, "Content-Type: multipart/report; boundary=\"p\"\n\n");
	for (int i = 0; i < 10000; i++)
		buf_printf(&b, "--p\nContent-Type: text/x-part\n\npart %d\n", i);
	buf_printf(&b, "--p\n%s--p--\n", dsn_part);
	cr_assert_not(parse(buf_head(&b), buf_used(&b), false, &r));
	buf_free(&b);
}

Test(bounce, megabyte_lines)
{
	struct bounce_report r;
	struct buf b = { 0 };
	size_t mb = 1 << 20;
	char *big = malloc(mb);
	cr_assert_not_null(big);
	memset(big, 'a', mb);
	/* In the top-level header: the header never ends within the cap. */
	buf_puts(&b, "X-Junk: ");
	buf_append(&b, big, mb);
	buf_printf(&b, "\nContent-Type: multipart/report; boundary=\"R\"\n\n--R\n%s--R--\n",
	           dsn_part);
	double t0 = now_s();
	cr_assert_not(parse(buf_head(&b), buf_used(&b), false, &r));
	cr_assert(r.limited);
	/* In the returned original: the report is still read. */
	buf_reset(&b);
	buf_printf(&b,
	           "Content-Type: multipart/report; boundary=\"R\"\n\n--R\n%s--R\n"
	           "Content-Type: message/rfc822\n\nSubject: ",
	           dsn_part);
	buf_append(&b, big, mb);
	buf_puts(&b, "\n\nbody\n--R--\n");
	cr_assert(parse(buf_head(&b), buf_used(&b), false, &r));
	cr_assert_str_eq(r.rcpt[0].final_rcpt, "zed@example.org");
	/* As a field value in the DSN: cut to size. */
	buf_reset(&b);
	buf_puts(&b, "Content-Type: multipart/report; boundary=\"R\"\n\n--R\n"
	             "Content-Type: message/delivery-status\n\n"
	             "Final-Recipient: rfc822; zed@example.org\nAction: failed\n"
	             "Diagnostic-Code: smtp; 550 5.1.1 ");
	buf_append(&b, big, mb);
	buf_puts(&b, "\n--R--\n");
	cr_assert(parse(buf_head(&b), buf_used(&b), false, &r));
	cr_assert_eq(strlen(r.rcpt[0].diag), sizeof(r.rcpt[0].diag) - 1);
	cr_assert_str_eq(r.rcpt[0].status, "5.1.1");
	/* As a text body line. */
	buf_reset(&b);
	buf_puts(&b, "From: MAILER-DAEMON@x\nSubject: Undeliverable\n\n");
	buf_append(&b, big, mb);
	buf_puts(&b, "\n550 5.1.1 <zed@example.org> User unknown\n");
	cr_assert_not(parse(buf_head(&b), buf_used(&b), false, &r),
	              "the reply lies past BOUNCE_TEXT_MAX");
	cr_assert(r.limited);
	cr_assert_lt(now_s() - t0, 1.0 * SLOW);
	free(big);
	buf_free(&b);
}

/* adversarial - texts built to make a naive scanner slow. */
Test(bounce, adversarial_text_is_fast)
{
	static const char *const units[] = {
		": 550 : 450-", "@a.b @", "5.1.1 4.", "couldn't be delivere",
		"<a@b.c>: ",    "--x\n",  "=\n",      "  x@y.z\n    550 ",
	};
	struct bounce_report r;
	for (size_t u = 0; u < RP_ARRAY_LEN(units); u++) {
		struct buf b = { 0 };
		buf_puts(&b, "From: MAILER-DAEMON@x\nSubject: Undeliverable\n"
		             "Content-Transfer-Encoding: quoted-printable\n\n"
		             "This message was created automatically by mail delivery software.\n"
		             "This is the mail system at host x. qmail-send program\n"
		             "address(es) failed:\n");
		while (buf_used(&b) < (1u << 20))
			buf_puts(&b, units[u]);
		double t0 = now_s();
		parse(buf_head(&b), buf_used(&b), false, &r);
		double dt = now_s() - t0;
		cr_assert_lt(dt, 0.5 * SLOW, "unit '%s': %.3f s", units[u], dt);
		buf_free(&b);
	}
}

/* adversarial DSNs: a recipient per line, a megabyte of them. */
Test(bounce, adversarial_dsn_is_fast)
{
	static const char *const units[] = {
		"Action: failed\n",
		"Final-Recipient: rfc822; a@b.c\n",
		"Diagnostic-Code: smtp; 550-5.1.1 550-5.1.1 550-5.1.1 550-5.1.1 550-5.1.1\n",
		"X: y\n z\n",
		"\n\n",
		"--b\n",
	};
	struct bounce_report r;
	for (size_t u = 0; u < RP_ARRAY_LEN(units); u++) {
		struct buf b = { 0 };
		buf_puts(&b, "Content-Type: multipart/report; boundary=b\n\n--b\n"
		             "Content-Type: message/delivery-status\n\n"
		             "Final-Recipient: rfc822; zed@example.org\nAction: failed\n");
		while (buf_used(&b) < (1u << 20))
			buf_puts(&b, units[u]);
		double t0 = now_s();
		cr_assert(parse(buf_head(&b), buf_used(&b), false, &r), "unit %zu", u);
		double dt = now_s() - t0;
		cr_assert_str_eq(r.rcpt[0].final_rcpt, "zed@example.org");
		cr_assert_lt(dt, 0.5 * SLOW, "unit '%s': %.3f s", units[u], dt);
		buf_free(&b);
	}
}

Test(bounce, throughput)
{
	/* A ~4 KB DSN: the Postfix sample with a longer returned header. */
	struct buf b = { 0 };
	const char *end = strstr(postfix_dsn, "Date: Tue, 14 May 2024 09:59:58");
	buf_append(&b, postfix_dsn, (size_t)(end - postfix_dsn));
	while (buf_used(&b) < 4000)
		buf_puts(&b, "Received: from hop.example (hop.example [192.0.2.99]) by "
		             "next.example with ESMTP\n");
	buf_puts(&b, end);
	size_t n;
	char *msg = exact(buf_head(&b), buf_used(&b), true, &n);
	buf_free(&b);
	struct bounce_report *r = malloc(sizeof(*r));
	cr_assert_not_null(r);
	unsigned count = 0;
	double t0 = now_s(), dt;
	do {
		for (int i = 0; i < 1000; i++, count++)
			cr_assert(bounce_parse(msg, n, r));
		dt = now_s() - t0;
	} while (dt < 0.5);
	cr_assert_str_eq(r->rcpt[0].final_rcpt, "alice@example.org");
	fprintf(stderr, "bounce_parse: %zu-byte DSN, %.0f messages/s (%.2f us each)\n", n,
	        count / dt, dt * 1e6 / count);
	free(r);
	free(msg);
}
