# A clean shutdown loses nothing that is queued, even when no worker is
# there to write it: grants made while the database's worker was away
# (terminated, and not restarted yet) are saved by the postmaster's exit to
# pg_stat/rate_limiter.usage_queue, queued again at the next start and
# written by the worker then.  An immediate shutdown saves nothing (shared
# memory is not trusted then): that is the async loss bound.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('queue_shutdown');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION rate_limiter;
	SELECT set_rate_limit('sd_user', 1000, '1 day');
});
my $queue_file = $node->data_dir . '/pg_stat/rate_limiter.usage_queue';
my $worker_q = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'rate_limiter flusher'};

sub metric
{
	my ($name) = @_;
	return $node->safe_psql('postgres', "SELECT get_performance_metrics()->>'$name'");
}

sub used
{
	return $node->safe_psql('postgres',
		"SELECT used FROM get_rate_limit_status('sd_user') WHERE scope = 'user' AND limit_kind = 'tokens'");
}

sub rows
{
	return $node->safe_psql('postgres', "SELECT count(*) FROM token_usage WHERE user_id = 'sd_user'");
}

# Terminates the worker and waits until it is gone: the launcher starts the
# next one only after its restart delay (5 s).
sub worker_away
{
	ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($worker_q) w"), 'the worker runs');
	my $pid = $node->safe_psql('postgres', $worker_q);
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM ($worker_q) w"), 'the worker is gone');
}

worker_away();
$node->safe_psql('postgres', "SELECT allocate_tokens('sd_user', 1, 'high') FROM generate_series(1, 20)");
is(metric('usage_queue_depth'), '20', '20 grants are queued while no worker runs');
my $log_offset = -s $node->logfile;
$node->stop('fast');
ok($node->log_contains(qr/rate_limiter: saved 20 queued usage events/, $log_offset),
	'the clean shutdown saved them');
ok(-f $queue_file, 'to pg_stat/rate_limiter.usage_queue');

$log_offset = -s $node->logfile;
$node->start;
ok($node->log_contains(qr/rate_limiter: queued 20 saved usage events again/, $log_offset),
	'the next start queued them again');
ok(!-e $queue_file, 'and removed the file');
$node->safe_psql('postgres', 'SELECT rate_limiter_flush()');
is(rows(), '20', 'the worker wrote every row');
is(used(), '20', 'and the counter (from the counter file) matches them');

# A second clean restart with nothing queued writes no file.
$node->restart;
ok(!-e $queue_file, 'nothing queued: no file');
is(rows(), '20', 'and no row twice');

# An immediate shutdown is not clean: nothing is saved, the queued events
# are lost (the documented async loss bound), and the counters are rebuilt
# from the rows.
worker_away();
$node->safe_psql('postgres', "SELECT allocate_tokens('sd_user', 1, 'high') FROM generate_series(1, 5)");
$node->stop('immediate');
ok(!-e $queue_file, 'an immediate shutdown saves no queue');
$node->start;
$node->safe_psql('postgres', 'SELECT rate_limiter_flush()');
is(rows(), '20', 'its queued events are lost');
is(used(), '20', 'and the rebuilt counter matches the rows');

$node->stop;
done_testing();
