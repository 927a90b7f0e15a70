# One session must not starve the others through the usage queue.
#
# The rows of refund_on_abort calls wait for their transaction's commit in
# room reserved in the queue.  One transaction may reserve at most
# rate_limiter.transaction_queue_share of its database's share, and all
# transactions together at most half of that share; past its cap a
# transaction writes its rows itself (they follow it, with their charges),
# at once.  Other sessions' calls keep queueing without waiting.
#
# Also: a row written synchronously because the queue was full follows the
# caller's transaction, and so does its charge.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('queue_reservations');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
rate_limiter.usage_queue_size = 64kB
rate_limiter.queue_full_wait = 100ms
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION rate_limiter;
	CREATE ROLE hog LOGIN;
	SELECT set_rate_limit(u, 1000000000, '1 day') FROM unnest(ARRAY['rs_hog', 'rs_other', 'rs_fill', 'rs_fate']) u;
});

sub metric
{
	my ($name) = @_;
	return $node->safe_psql('postgres', "SELECT get_performance_metrics()->>'$name'");
}

sub fate
{
	my ($user) = @_;
	return $node->safe_psql('postgres',
		"SELECT (SELECT used FROM get_rate_limit_status('$user') WHERE scope = 'user' AND limit_kind = 'tokens')
		        || ' used, ' || (SELECT count(*) FROM token_usage WHERE user_id = '$user') || ' rows'");
}

# A PUBLIC role opens a transaction of refund_on_abort calls (and does not
# wait for room itself) ...
my $hog = $node->background_psql('postgres', extra_params => [ '-U', 'hog' ]);
$hog->query_safe('BEGIN');
$hog->query_safe('SET LOCAL rate_limiter.refund_on_abort = on');
$hog->query_safe('SET LOCAL rate_limiter.queue_full_wait = 0');
$hog->query_safe("SELECT count(*) FROM generate_series(1, 1000) g, LATERAL allocate_tokens('rs_hog' || left(g::text, 0), 1, 'high')");
cmp_ok(metric('usage_transaction_cap_fallbacks'), '>', 0, 'the transaction passed its cap and wrote rows itself');

# ... while another session keeps calling.
my $waits = metric('usage_queue_full_waits');
my $started = time;
$node->safe_psql('postgres',
	"SELECT count(*) FROM generate_series(1, 200) g, LATERAL allocate_tokens('rs_other' || left(g::text, 0), 1, 'high')");
my $elapsed = time - $started;
is(metric('usage_queue_full_waits') - $waits, 0, 'the other session never found the queue full');
cmp_ok($elapsed, '<', 5, "and was not slowed down ($elapsed s for 200 calls)");

$hog->query_safe('COMMIT');
$node->safe_psql('postgres', 'SELECT rate_limiter_flush()');
is(fate('rs_hog'), '1000 used, 1000 rows', 'the committed transaction has every row and charge');
is(fate('rs_other'), '200 used, 200 rows', 'and so has the other session');

# The same transaction rolled back: charges and rows go, queued or written.
$hog->query_safe('BEGIN');
$hog->query_safe('SET LOCAL rate_limiter.refund_on_abort = on');
$hog->query_safe('SET LOCAL rate_limiter.queue_full_wait = 0');
$hog->query_safe("SELECT count(*) FROM generate_series(1, 1000) g, LATERAL allocate_tokens('rs_hog' || left(g::text, 0), 1, 'high')");
$hog->query_safe('ROLLBACK');
$hog->quit;
$node->safe_psql('postgres', 'SELECT rate_limiter_flush()');
is(fate('rs_hog'), '1000 used, 1000 rows', 'a rollback takes both');

# With the worker away the database's share fills up; later calls write
# their rows synchronously.  In a transaction that rolls back, such a row
# goes, and so does its charge.
my $worker_q = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rate_limiter flusher'};
my $pid = $node->safe_psql('postgres', $worker_q);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM ($worker_q) w"), 'the worker is gone');
my $fallbacks = metric('usage_sync_fallbacks');
$node->safe_psql('postgres', q{
	SET rate_limiter.queue_full_wait = 0;
	SELECT count(*) FROM generate_series(1, 1000) g, LATERAL allocate_tokens('rs_fill' || left(g::text, 0), 1, 'high');
	BEGIN;
	SELECT count(*) FROM generate_series(1, 10) g, LATERAL allocate_tokens('rs_fate' || left(g::text, 0), 1, 'high');
	ROLLBACK;
});
cmp_ok(metric('usage_sync_fallbacks') - $fallbacks, '>', 10, 'the share was full: rows were written synchronously');
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($worker_q) w"), 'the worker is back');
$node->safe_psql('postgres', 'SELECT rate_limiter_flush()');
is(fate('rs_fill'), '1000 used, 1000 rows', 'every committed grant has its row');
is(fate('rs_fate'), '0 used, 0 rows', 'the rolled-back synchronous rows took their charges with them');

$node->stop;
done_testing();
