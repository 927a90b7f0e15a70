# Lock waits are bounded by rate_limiter.lock_timeout.  A session holds the
# partition lock (the testing GUC rate_limiter.debug_hold_lock_ms keeps it
# for a while inside one call); another session on the same key then times
# out with 55P03 and is charged nothing, or is allowed when failure_mode is
# open, or waits it out when lock_timeout is 0.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('lock_timeout');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');
$node->safe_psql('postgres', "SELECT set_rate_limit('lt_user', 1000000, '3650 days')");

sub metric
{
	my ($name) = @_;
	return $node->safe_psql('postgres', "SELECT get_performance_metrics()->>'$name'");
}

sub used
{
	return $node->safe_psql('postgres',
		"SELECT used FROM get_rate_limit_status('lt_user') WHERE scope = 'user'");
}

# Starts a session that holds lt_user's partition lock for $ms inside one
# allocate_tokens call, and returns once that call is running.
sub hold_lock
{
	my ($ms) = @_;
	my $holder = $node->background_psql('postgres');
	$holder->query_safe("SET rate_limiter.debug_hold_lock_ms = $ms");
	$holder->query_until(qr/holding/,
		"\\echo holding\nSELECT tokens_allocated FROM allocate_tokens('lt_user', 1, 'high');\n");
	$node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%allocate_tokens(''lt_user'', 1,%'"
	) or die 'holder never started';
	usleep(300_000);    # let the call reach its locked section
	return $holder;
}

my $timeouts_before = metric('lock_timeouts');

# failure_mode = closed: 55P03 after about lock_timeout, nothing charged.
my $holder = hold_lock(3000);
my $t0 = time();
my ($ret, $out, $err) = $node->psql('postgres',
	"SET rate_limiter.lock_timeout = '200ms'; SELECT * FROM allocate_tokens('lt_user', 5, 'high')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
my $elapsed = time() - $t0;
isnt($ret, 0, 'the call fails while the lock is held');
like($err, qr/55P03/, 'with SQLSTATE 55P03');
like($err, qr/could not obtain a rate limiter lock within 200 ms/, 'and a clear message');
cmp_ok($elapsed, '>=', 0.2, 'after waiting at least lock_timeout');
cmp_ok($elapsed, '<', 2.5, 'but not for the whole hold');
$holder->quit;
is(used(), '1', 'only the holder was charged; the timed-out call charged nothing');

# failure_mode = open: allowed without the lock, bounded by the call's
# priority share of the quota's capacity, said so, and charged when the
# transaction ends.
$holder = hold_lock(3000);
$out = $node->safe_psql('postgres',
	"SET rate_limiter.lock_timeout = '200ms'; SET rate_limiter.failure_mode = 'open';
	 SELECT success, tokens_allocated, reason FROM allocate_tokens('lt_user', 5, 'high')");
is($out, 't|5|fail_open_lock_timeout', 'failure_mode = open allows the call');
$holder->quit;
is(used(), '7', 'the fail-open grant was charged once the lock was free (holders 1 + 1, grant 5)');
$holder = hold_lock(3000);
$out = $node->safe_psql('postgres',
	"SET rate_limiter.lock_timeout = '200ms'; SET rate_limiter.failure_mode = 'open'; BEGIN;
	 SELECT success, tokens_allocated FROM allocate_tokens('lt_user', 900000, 'high');
	 SELECT success, tokens_allocated, reason FROM allocate_tokens('lt_user', 900000, 'high', NULL, NULL,
	                                                       '{\"all_or_nothing\": true}'); COMMIT;");
is($out, "t|500000\nf|0|fail_open_lock_timeout",
	'a fail-open grant never exceeds the high share of what lockless grants leave of the capacity');
$holder->quit;
is(used(), '500008', 'and it is charged');
is(metric('lock_timeouts') - $timeouts_before, 4, 'every timeout was counted');

# A plain role cannot shorten the wait to fail open on purpose.
$node->safe_psql('postgres', 'CREATE ROLE lt_plain LOGIN');
($ret, $out, $err) = $node->psql('postgres', "SET rate_limiter.lock_timeout = '1ms'",
	extra_params => [ '-U', 'lt_plain' ]);
like($err, qr/permission denied to set parameter "rate_limiter.lock_timeout"/,
	'lock_timeout is superuser-only');

# A fail-open grant whose usage row follows the transaction (a
# refund_on_abort call, or any call with usage_log = sync) takes its charge
# along: a rollback drops both.
$holder = hold_lock(3000);
$node->safe_psql('postgres',
	"SET rate_limiter.lock_timeout = '200ms'; SET rate_limiter.failure_mode = 'open'; BEGIN;
	 SELECT reason FROM allocate_tokens('lt_user', 5, 'high', NULL, NULL, '{\"refund_on_abort\": true}');
	 SET LOCAL rate_limiter.usage_log = sync;
	 SELECT reason FROM allocate_tokens('lt_user', 5, 'high'); ROLLBACK;");
$holder->quit;
is(used(), '500009', 'rolled-back fail-open grants whose rows follow the transaction charge nothing');

# lock_timeout = 0: the call waits for the holder and then succeeds.
$holder = hold_lock(1500);
$t0 = time();
$out = $node->safe_psql('postgres',
	"SET rate_limiter.lock_timeout = 0; SELECT success, tokens_allocated FROM allocate_tokens('lt_user', 5, 'high')");
$elapsed = time() - $t0;
is($out, 't|5', 'lock_timeout = 0 waits and succeeds');
cmp_ok($elapsed, '>=', 0.5, 'after the holder released the lock');
$holder->quit;
is(used(), '500015', 'holders and the waiting call were all counted');

$node->stop;
done_testing();
