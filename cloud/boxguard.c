/*
 * boxguard: a Mosquitto 2.0 plugin that enforces what a Box may publish, before the
 * dynamic-security plugin decides the rest (docs/architecture.md, "Topic namespace").
 *
 * Dynsec in Mosquitto 2.0.11 sees a topic and a client, not the retain flag nor the size, so
 * a Box could park megabytes of retained messages on any topic under its uplink. This plugin
 * is loaded first; for a Box (any client whose username does not start with "cloud:") and a
 * PUBLISH it decides:
 *   - the topic must be boxes/<its username>/up/<leaf>, leaf one of the documented ones;
 *   - retain only on up/status and up/meta;
 *   - the payload at most the leaf's size limit;
 *   - at most `msgs_per_s` messages and `bytes_per_s` bytes a second, with bursts of
 *     `msgs_burst` and `bytes_burst` (token buckets, per Box).
 * A refused QoS 1 PUBLISH gets a PUBACK "not authorized" (0x87): the Box keeps the message in
 * its queue and sends it again later. A Box over its rate is told to the platform on
 * boxes/<id>/up/limits (a leaf no Box may publish to), at most every `notice_s` seconds.
 * Everything else (services, subscriptions, deliveries) is deferred to dynsec, as are the
 * publishes allowed here: dynsec still checks the Box's own role.
 *
 * Options (plugin_opt_<name>): msgs_per_s, msgs_burst, bytes_per_s, bytes_burst, notice_s.
 * Built by cloud.broker with gcc and Debian's mosquitto-dev headers, and with "boxguard_rules.h",
 * which cloud.broker generates from proto.topics (guard_header): the topic root, the uplink
 * leaves a Box may publish with their sizes and retain rules, the limits leaf, the longest Box id.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "boxguard_rules.h"  /* TOPIC_ROOT, TOPIC_UP, LIMITS_LEAF, MAX_ID, struct leaf_rule, RULES[] */

#define BUCKETS 4096
#define PREFIX TOPIC_ROOT "/"
#define UP_PART "/" TOPIC_UP "/"

struct box_state {
	struct box_state *next;
	char id[MAX_ID + 1];
	double msgs, bytes;      /* tokens left */
	double last;             /* when the buckets were last filled */
	double last_notice;
	uint64_t refused;        /* refused since the last notice */
};

static mosquitto_plugin_id_t *plugin_id;
static struct box_state *table[BUCKETS];
static double msgs_per_s = 50, msgs_burst = 500;
static double bytes_per_s = 1024 * 1024, bytes_burst = 16 * 1024 * 1024;
static double notice_s = 10;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t hash(const char *s)
{
	uint32_t h = 2166136261u;
	for(; *s; s++){
		h = (h ^ (uint8_t)*s) * 16777619u;
	}
	return h % BUCKETS;
}

static struct box_state *state_of(const char *id)
{
	uint32_t h = hash(id);
	struct box_state *b;
	for(b = table[h]; b; b = b->next){
		if(!strcmp(b->id, id)) return b;
	}
	b = calloc(1, sizeof(*b));
	if(!b) return NULL;
	snprintf(b->id, sizeof(b->id), "%s", id);
	b->msgs = msgs_burst;
	b->bytes = bytes_burst;
	b->last = now_s();
	b->last_notice = -1e9;
	b->next = table[h];
	table[h] = b;
	return b;
}

static const struct leaf_rule *rule_of(const char *topic, const char *id)
{
	size_t n = strlen(id), p = strlen(PREFIX), u = strlen(UP_PART);
	size_t i;
	if(strncmp(topic, PREFIX, p) || strncmp(topic + p, id, n) || strncmp(topic + p + n, UP_PART, u)){
		return NULL;
	}
	for(i = 0; i < sizeof(RULES) / sizeof(RULES[0]); i++){
		if(!strcmp(topic + p + n + u, RULES[i].name)) return &RULES[i];
	}
	return NULL;
}

static void notice(struct box_state *b, const char *why, double t)
{
	char topic[MAX_ID + 32], body[256];
	int len;
	b->refused++;
	if(t - b->last_notice < notice_s) return;
	b->last_notice = t;
	mosquitto_log_printf(MOSQ_LOG_WARNING, "boxguard: refused %llu message(s) from %s: %s",
			(unsigned long long)b->refused, b->id, why);
	snprintf(topic, sizeof(topic), PREFIX "%s" UP_PART LIMITS_LEAF, b->id);
	len = snprintf(body, sizeof(body), "{\"v\":1,\"refused\":%llu,\"reason\":\"%s\"}",
			(unsigned long long)b->refused, why);
	mosquitto_broker_publish_copy(NULL, topic, len, body, 1, false, NULL);
	b->refused = 0;
}

static int acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *id = mosquitto_client_username(ed->client);
	const struct leaf_rule *rule;
	struct box_state *b;
	double t;
	(void)event;
	(void)userdata;

	if(!id || !strncmp(id, "cloud:", 6) || ed->access != MOSQ_ACL_WRITE) return MOSQ_ERR_PLUGIN_DEFER;
	if(strlen(id) > MAX_ID) return MOSQ_ERR_ACL_DENIED;
	rule = rule_of(ed->topic, id);
	if(!rule){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "boxguard: %s may not publish to %s", id, ed->topic);
		return MOSQ_ERR_ACL_DENIED;
	}
	if(ed->retain && !rule->retain){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "boxguard: %s may not retain on %s", id, ed->topic);
		return MOSQ_ERR_ACL_DENIED;
	}
	if(ed->payloadlen > rule->max_bytes){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "boxguard: %s sent %u bytes on %s (at most %u)",
				id, ed->payloadlen, ed->topic, rule->max_bytes);
		return MOSQ_ERR_ACL_DENIED;
	}
	b = state_of(id);
	if(!b) return MOSQ_ERR_ACL_DENIED;
	t = now_s();
	b->msgs += (t - b->last) * msgs_per_s;
	b->bytes += (t - b->last) * bytes_per_s;
	if(b->msgs > msgs_burst) b->msgs = msgs_burst;
	if(b->bytes > bytes_burst) b->bytes = bytes_burst;
	b->last = t;
	if(b->msgs < 1){
		notice(b, "over its message rate", t);
		return MOSQ_ERR_ACL_DENIED;
	}
	if(b->bytes < ed->payloadlen){
		notice(b, "over its byte rate", t);
		return MOSQ_ERR_ACL_DENIED;
	}
	b->msgs -= 1;
	b->bytes -= ed->payloadlen;
	return MOSQ_ERR_PLUGIN_DEFER;  /* allowed here: dynsec checks the Box's role */
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data,
		struct mosquitto_opt *opts, int opt_count)
{
	int i;
	(void)user_data;
	for(i = 0; i < opt_count; i++){
		double v = atof(opts[i].value);
		if(v <= 0){
			mosquitto_log_printf(MOSQ_LOG_ERR, "boxguard: option %s must be a positive number", opts[i].key);
			return MOSQ_ERR_INVAL;
		}
		if(!strcmp(opts[i].key, "msgs_per_s")) msgs_per_s = v;
		else if(!strcmp(opts[i].key, "msgs_burst")) msgs_burst = v;
		else if(!strcmp(opts[i].key, "bytes_per_s")) bytes_per_s = v;
		else if(!strcmp(opts[i].key, "bytes_burst")) bytes_burst = v;
		else if(!strcmp(opts[i].key, "notice_s")) notice_s = v;
		else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "boxguard: unknown option %s", opts[i].key);
			return MOSQ_ERR_INVAL;
		}
	}
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	int i;
	(void)user_data;
	(void)opts;
	(void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, acl_check, NULL);
	for(i = 0; i < BUCKETS; i++){
		while(table[i]){
			struct box_state *b = table[i];
			table[i] = b->next;
			free(b);
		}
	}
	return MOSQ_ERR_SUCCESS;
}
