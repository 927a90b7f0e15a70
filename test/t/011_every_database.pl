# Every database where the extension is installed gets the whole product,
# with no setting: two application databases, neither named by
# rate_limiter.database (left unset), each get asynchronous usage rows,
# alerts in rate_limit_alerts and NOTIFY delivered in their own database.
# One database whose worker is missing does not hold up the other's queue.
# DROP DATABASE without FORCE (and RENAME, and CREATE DATABASE ... TEMPLATE)
# works while a worker runs; DROP EXTENSION stops the worker for good; a
# restart brings the workers back before any call; a fast shutdown with
# 100,000 rules and a flush under way is prompt.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes;

my $node = PostgreSQL::Test::Cluster->new('every_database');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
rate_limiter.alert_channel = 'rl_alerts'
rate_limiter.flush_interval = '50ms'
# Small: one database's share (half of it) fills quickly below.
rate_limiter.usage_queue_size = 64kB
rate_limiter.queue_full_wait = 10ms
});
$node->start;

my @apps = qw(app1 app2);
for my $db (@apps)
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION rate_limiter');
}

my $workers_q = q{SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '')
  FROM pg_stat_activity WHERE backend_type = 'rate_limiter flusher'};
sub workers_are
{
	my ($expected, $label) = @_;
	ok($node->poll_query_until('postgres', "SELECT ($workers_q) = '$expected'"), $label)
	  or diag('workers: ' . $node->safe_psql('postgres', $workers_q));
}

workers_are('app1,app2', 'one worker per database with the extension, none elsewhere');

sub metric
{
	my ($db, $name) = @_;
	return $node->safe_psql($db, "SELECT get_performance_metrics()->>'$name'");
}

for my $db (@apps)
{
	is($node->safe_psql($db, 'SHOW rate_limiter.usage_log'), 'async', "$db: usage_log is async");
	# Async, not sync: the row of a grant whose transaction rolls back is
	# still written (by the worker); a synchronous row would roll back.
	$node->safe_psql($db, "SELECT set_rate_limit('u_$db', 1000, '1 hour')");
	my $flushed = metric($db, 'usage_rows_flushed');
	$node->safe_psql($db, "BEGIN; SELECT allocate_tokens('u_$db', 10, 'high'); ROLLBACK;");
	$node->safe_psql($db, 'SELECT rate_limiter_flush()');
	is($node->safe_psql($db, "SELECT count(*) || ':' || sum(tokens_used) FROM token_usage WHERE user_id = 'u_$db'"),
		'1:10', "$db: the worker wrote the usage row of a rolled-back grant (async)");
	cmp_ok(metric($db, 'usage_rows_flushed'), '>', $flushed, "$db: counted in usage_rows_flushed");

	# Alerts: rows and NOTIFY in this database.
	$node->safe_psql($db, "SELECT set_user_rate_limit('n_$db', 10, '1 hour')");
	my ($ret, $stdout, $stderr) = $node->psql($db, qq{
LISTEN rl_alerts;
SELECT count(*) FROM (SELECT check_rate_limit('n_$db') FROM generate_series(1, 10) OFFSET 0) s;
SELECT rate_limiter_flush() >= 0;
SELECT 1;
});
	is($ret, 0, "$db: psql ran") or diag($stderr);
	my @payloads = $stdout =~ /Asynchronous notification "rl_alerts" with payload "([^\n]*)" received/g;
	is(scalar(@payloads), 3, "$db: three NOTIFY alerts (80, 95, 100%) delivered in its own database")
	  or diag($stdout);
	like($payloads[0] // '', qr/"kind": "quota_requests_80".*"user_id": "n_$db"/, "$db: the 80% alert");
	is($node->safe_psql($db, "SELECT count(*) FROM rate_limit_alerts WHERE user_id = 'n_$db'"),
		'3', "$db: one rate_limit_alerts row per notification");
}

# A database whose worker is missing does not hold up another's queue.
# app1's worker cannot connect any more (ALLOW_CONNECTIONS false, then
# terminated); an open session there keeps queueing until app1's share of
# the queue is full, then waits queue_full_wait and writes synchronously.
# app2 keeps its asynchronous log meanwhile, and its flush does not wait
# for app1's events.
my $app1 = $node->background_psql('app1');
$app1->query_safe("SELECT set_rate_limit('stuck', 1000000000, '1 hour')");
# A counted call first: the session decides at its first one that its
# database is served (it queues from then on).
$app1->query_safe("SELECT allowed FROM check_rate_limit('stuck')");
# Without waiting for room: the fallback is what is measured, not the wait.
$app1->query_safe('SET rate_limiter.queue_full_wait = 0');
$node->safe_psql('postgres', 'ALTER DATABASE app1 ALLOW_CONNECTIONS false');
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'rate_limiter flusher' AND datname = 'app1'");
workers_are('app2', "app1's worker is gone and is not restarted while app1 refuses connections");
my $fallbacks = metric('app2', 'usage_sync_fallbacks');
$app1->query_safe(q{SELECT count(*) FROM (SELECT allocate_tokens('stuck', 1, 'high') FROM generate_series(1, 2000) OFFSET 0) s});
cmp_ok(metric('app2', 'usage_sync_fallbacks'), '>', $fallbacks,
	"app1's share of the queue filled: its calls wrote synchronously");
$fallbacks = metric('app2', 'usage_sync_fallbacks');
$node->safe_psql('app2', "SELECT set_rate_limit('free', 1000000000, '1 hour')");
$node->safe_psql('app2', q{SELECT count(*) FROM (SELECT allocate_tokens('free', 1, 'high') FROM generate_series(1, 300) OFFSET 0) s});
my $t0 = Time::HiRes::time();
$node->safe_psql('app2', 'SELECT rate_limiter_flush()');
my $flush_s = Time::HiRes::time() - $t0;
cmp_ok($flush_s, '<', 5, sprintf("app2's flush does not wait for app1's queued events (%.2f s)", $flush_s));
is($node->safe_psql('app2', "SELECT count(*) FROM token_usage WHERE user_id = 'free'"), '300',
	'app2: every row written');
is(metric('app2', 'usage_sync_fallbacks'), $fallbacks, 'app2: none of them synchronously');
cmp_ok(metric('app2', 'usage_queue_depth'), '>', 0, "app1's events are still queued");
$node->safe_psql('postgres', 'ALTER DATABASE app1 ALLOW_CONNECTIONS true');
workers_are('app1,app2', "app1's worker is back once app1 accepts connections again");
$app1->query_safe('SELECT rate_limiter_flush()');
is($app1->query_safe("SELECT count(*) || ':' || count(DISTINCT id) FROM token_usage WHERE user_id = 'stuck' AND priority_level IS NOT NULL"),
	'2000:2000', 'app1: every call logged exactly once (queued or synchronously)');
$app1->quit;

# Upkeep (every 10 s) copied the counter of a scope app2's worker flushed
# into token_limits.  (app1's worker was restarted since: a worker forgets
# the scopes it had not refreshed yet.)
ok($node->poll_query_until('app2', "SELECT tokens_used_in_period = 10 FROM token_limits WHERE user_id = 'u_app2'"),
	'app2: upkeep refreshed the snapshot of a flushed scope');

# Database commands that need no other session in the database work
# without FORCE while its worker runs.
$node->safe_psql('postgres', 'ALTER DATABASE app1 RENAME TO app1_renamed');
workers_are('app1_renamed,app2', 'RENAME works; the worker comes back under the new name');
$node->safe_psql('postgres', 'ALTER DATABASE app1_renamed RENAME TO app1');
$node->safe_psql('postgres', 'CREATE DATABASE app1_copy TEMPLATE app1');
workers_are('app1,app2', 'CREATE DATABASE ... TEMPLATE works; the copy costs nothing until it is used');
$node->safe_psql('app1_copy', "SELECT allowed FROM check_rate_limit('copy_user')");
workers_are('app1,app1_copy,app2', 'the copy gets its worker at its first call');
$node->safe_psql('postgres', 'DROP DATABASE app2');
workers_are('app1,app1_copy', 'DROP DATABASE without FORCE works while its worker runs');

# DROP EXTENSION stops the worker, and it does not come back.
$node->safe_psql('app1_copy', 'DROP EXTENSION rate_limiter');
workers_are('app1', 'DROP EXTENSION stops the worker');
sleep 3;
is($node->safe_psql('postgres', $workers_q), 'app1', 'and it does not come back');

# A clean restart (with the default queue size from now on): the workers
# are back before any call.
$node->append_conf('postgresql.conf', "rate_limiter.usage_queue_size = '8MB'");
$node->restart;
workers_are('app1', 'after a restart the worker is back without any call');
$node->safe_psql('app1', "SELECT allowed FROM check_rate_limit('after_restart')");
$node->safe_psql('app1', 'SELECT rate_limiter_flush()');
is($node->safe_psql('app1', "SELECT count(*) FROM token_usage WHERE user_id = 'after_restart'"), '1',
	'and it flushes');

# A fast shutdown is prompt with 100,000 rules, upkeep work for 20,000 of
# them and a flush under way.
$node->safe_psql('app1', q{
	INSERT INTO token_limits (user_id, max_tokens_per_period, period_interval)
	SELECT 'r' || g, 1000, interval '1 hour' FROM generate_series(1, 100000) g});
$node->safe_psql('app1', q{SELECT count(*) FROM generate_series(1, 20000) g, allocate_tokens('r' || g, 1, 'high') a});
$t0 = Time::HiRes::time();
$node->stop('fast');
my $stop_s = Time::HiRes::time() - $t0;
cmp_ok($stop_s, '<', 15, sprintf('pg_ctl stop -m fast took %.2f s', $stop_s));
$node->start;
is($node->safe_psql('app1', "SELECT count(*) FROM token_usage WHERE user_id LIKE 'r%'"), '20000',
	'every row queued before the shutdown was written');

$node->stop;
done_testing();
