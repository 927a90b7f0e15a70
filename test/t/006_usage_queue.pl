# The async usage log under pressure: a tiny queue, 8 pgbench clients, and
# a flusher that is terminated while they run.  Every grant is logged
# exactly once (queued or, when the queue stays full, written
# synchronously), the flusher comes back and keeps flushing, and its
# retention deletes expired rows only.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('usage_queue');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
max_connections = 20
rate_limiter.usage_queue_size = 64kB
rate_limiter.queue_full_wait = 10ms
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');
# A huge quota: every call is granted 3 tokens (half of what remains,
# capped at the 3 asked).
$node->safe_psql('postgres', "SELECT set_rate_limit('uq_hot', 1000000000, '1 hour')");
# Retention (90 days by default): the old row goes, the recent one stays.
$node->safe_psql('postgres', q{
	INSERT INTO token_usage (user_id, tokens_used, "timestamp")
	VALUES ('uq_old', 1, now() - interval '200 days'), ('uq_recent', 1, now() - interval '1 day')});

my $flusher_q = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rate_limiter flusher'};
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($flusher_q) f"), 'the flusher runs');
my $first_pid = $node->safe_psql('postgres', $flusher_q);

sub metric
{
	my ($name) = @_;
	return $node->safe_psql('postgres', "SELECT get_performance_metrics()->>'$name'");
}

# Every row of uq_hot once: the counter (tokens in the current window)
# equals the logged tokens of that window, and there is one row per call.
sub check_totals
{
	my ($calls, $label) = @_;
	$node->safe_psql('postgres', 'SELECT rate_limiter_flush()');
	my ($used, $window_start) = split /\|/, $node->safe_psql('postgres',
		q{SELECT used, window_start FROM get_rate_limit_status('uq_hot')
		   WHERE scope = 'user' AND limit_kind = 'tokens'});
	is($node->safe_psql('postgres',
		"SELECT sum(tokens_used) FROM token_usage WHERE user_id = 'uq_hot' AND \"timestamp\" >= '$window_start'"),
		$used, "$label: logged tokens equal the shared counter");
	is($node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT id) FROM token_usage WHERE user_id = 'uq_hot'"),
		"$calls/$calls", "$label: one row per granted call, distinct ids");
}

my $alloc = q{SELECT success FROM allocate_tokens('uq_hot', 3, 'high');};

# The queue fills while the flusher restarts (the postmaster waits a few
# seconds): callers wait up to queue_full_wait, then write synchronously.
$node->safe_psql('postgres', "SELECT pg_terminate_backend($first_pid)");
$node->pgbench('-n -M prepared -c 8 -j 4 -t 250', 0, [qr{processed: 2000/2000}], [qr{^$}],
	'pgbench with the flusher away', { 'uq_alloc_1' => $alloc });
cmp_ok(metric('usage_queue_full_waits'), '>', 0, 'callers found the queue full');
cmp_ok(metric('usage_sync_fallbacks'), '>', 0, 'and wrote synchronously');
check_totals(2000, 'flusher restarted');

ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($flusher_q) f"), 'the flusher is back');
isnt($node->safe_psql('postgres', $flusher_q), $first_pid, 'as a new process');

# With the flusher running: the queue drains as the clients go.
my $flushed_before = metric('usage_rows_flushed');
$node->pgbench('-n -M prepared -c 8 -j 4 -t 100', 0, [qr{processed: 800/800}], [qr{^$}],
	'pgbench with the flusher running', { 'uq_alloc_2' => $alloc });
check_totals(2800, 'flusher running');
cmp_ok(metric('usage_rows_flushed'), '>', $flushed_before, 'the flusher inserted rows');
is(metric('usage_queue_depth'), '0', 'nothing left queued');

ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM token_usage WHERE user_id = 'uq_old'"),
	'retention deleted the expired row');
is($node->safe_psql('postgres', "SELECT count(*) FROM token_usage WHERE user_id = 'uq_recent'"), '1',
	'and kept the recent one');

$node->stop;
done_testing();
