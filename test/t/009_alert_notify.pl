# Alerts are sent with NOTIFY on rate_limiter.alert_channel, one per alert
# row the flusher inserts (a repeated crossing in the same window sends
# nothing), delivered at the flusher's commit.  pg_regress cannot test this:
# psql prints the sender's PID.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('alert_notify');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
rate_limiter.alert_channel = 'rl_alerts'
rate_limiter.usage_log = sync
rate_limiter.max_keys = 16
# The table fills with one role's default-rule counters: no key budgets.
rate_limiter.role_key_share = 1
rate_limiter.configured_key_reserve = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');
$node->safe_psql('postgres', "SELECT set_user_rate_limit('n_user', 20, '1 hour')");

# One psql session: LISTEN, cross 80, 95 and 100%, wait for the flusher,
# then cross them again after a reset (same window: no new notification).
# psql prints what arrived after each command.
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{
SET rate_limiter.debug_clock = 1800000000;
LISTEN rl_alerts;
SELECT count(*) FROM (SELECT check_rate_limit('n_user') FROM generate_series(1, 20) OFFSET 0) s;
SELECT rate_limiter_flush() >= 0;
SELECT reset_rate_limit('n_user');
SELECT count(*) FROM (SELECT check_rate_limit('n_user') FROM generate_series(1, 20) OFFSET 0) s;
SELECT rate_limiter_flush() >= 0;
SELECT 1;
});
is($ret, 0, 'psql ran') or diag($stderr);
my @payloads = $stdout =~ /Asynchronous notification "rl_alerts" with payload "([^\n]*)" received/g;
is(scalar(@payloads), 3, 'one notification per threshold, none for the repeated crossing')
  or diag($stdout);
like($payloads[0] // '', qr/"kind": "quota_requests_80".*"user_id": "n_user"/, 'the 80% alert');
like($payloads[1] // '', qr/"kind": "quota_requests_95"/, 'the 95% alert');
like($payloads[2] // '', qr/"kind": "quota_requests_100".*"used": 20/, 'the exhausted alert');
is($node->safe_psql('postgres', "SELECT count(*) FROM rate_limit_alerts WHERE user_id = 'n_user'"),
	'3', 'one row per notification');

# An empty channel: rows, no notification.
$node->append_conf('postgresql.conf', "rate_limiter.alert_channel = ''");
$node->reload;
$node->safe_psql('postgres', "SELECT set_user_rate_limit('n_quiet', 1, '1 hour')");
($ret, $stdout, $stderr) = $node->psql('postgres', q{
LISTEN rl_alerts;
SELECT check_rate_limit('n_quiet');
SELECT rate_limiter_flush() >= 0;
SELECT 1;
});
unlike($stdout, qr/Asynchronous notification/, 'no notification without a channel');
is($node->safe_psql('postgres', "SELECT count(*) > 0 FROM rate_limit_alerts WHERE user_id = 'n_quiet'"),
	't', 'the rows are still written');

# Degradation: a full counter table raises table_full (RL507), and with
# failure_mode = open also fail_open; one row per kind and alert_interval.
$node->safe_psql('postgres', "SELECT set_default_user_rate_limit(1000, '1 hour')");
($ret, $stdout, $stderr) = $node->psql('postgres', q{
SELECT count(*) FROM (SELECT check_rate_limit('full_' || g) FROM generate_series(1, 40) g) s;
});
like($stderr, qr/counter table is full/, 'the table filled up');
($ret, $stdout, $stderr) = $node->psql('postgres', q{
SET rate_limiter.failure_mode = open;
SELECT count(*) FROM (SELECT check_rate_limit('open_' || g) FROM generate_series(1, 3) g OFFSET 0) s;
SELECT rate_limiter_flush() >= 0;
});
is($ret, 0, 'fail-open calls pass') or diag($stderr);
is($node->safe_psql('postgres',
		"SELECT string_agg(k, ',') FROM (SELECT DISTINCT kind || ':' || (user_id IS NULL) AS k "
		  . "FROM rate_limit_alerts WHERE kind IN ('table_full', 'fail_open') ORDER BY 1) s"),
	'fail_open:true,table_full:true', 'server-wide alerts of both kinds (two windows if the calls straddle an alert_interval boundary)');
is($node->safe_psql('postgres', "SELECT payload->>'kind' FROM rate_limit_alerts WHERE kind = 'fail_open' LIMIT 1"),
	'fail_open', 'fail_open payload');

$node->stop;
done_testing();
