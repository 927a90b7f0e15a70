# Counters survive a clean restart exactly (the state file), are rebuilt
# from token_usage after a crash, a corrupt state file or a promotion, and a
# standby refuses to decide.  Usage rows are written synchronously first
# (rate_limiter.usage_log = sync), so every committed grant has its row and
# the rebuilt counters are exact; then asynchronously, where a crash loses
# the events of about the last flush interval.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('durability');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->append_conf('postgresql.conf', "restart_after_crash = on");
$node->append_conf('postgresql.conf', "rate_limiter.usage_log = 'sync'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');

sub status
{
	my ($n, $user) = @_;
	return $n->safe_psql('postgres',
		"SELECT string_agg(limit_kind || ':' || algorithm || ':' || used || '/' || remaining, ' '
		         ORDER BY limit_kind, algorithm)
		   FROM get_rate_limit_status('$user')");
}

sub rows_of
{
	my ($n, $user) = @_;
	return $n->safe_psql('postgres',
		"SELECT count(*) || ' rows, ' || coalesce(sum(tokens_used), 0) || ' tokens' FROM token_usage WHERE user_id = '$user'");
}

# Four algorithms on one user: a fixed-window token quota, and request
# limits counted by sliding window, GCRA and token bucket (refill too slow
# to matter during the test).
$node->safe_psql('postgres', q{
	SELECT set_rate_limit('d1', 1000, '3650 days');
	SELECT set_user_rate_limit('d1', 100, '3650 days', algorithm => 'sliding_window');
	SELECT set_rate_limit('d1', 1000, '3650 days', 'ep', algorithm => 'token_bucket', burst => 500);
	SELECT set_user_rate_limit('d1', 10, '3650 days', 'ep', algorithm => 'gcra', burst => 99);
	SELECT allocate_tokens('d1', 300, 'high', 'ep') FROM generate_series(1, 3);
	SELECT check_rate_limit('d1', 'ep') FROM generate_series(1, 4);
});
my $before = status($node, 'd1');
like($before, qr/^requests:gcra:7\/93 requests:sliding_window:7\/93 tokens:fixed_window:\d+\/\d+ tokens:token_bucket:\d+\/\d+$/,
	"usage before the restart: $before");

# 1. Clean restart: the state file restores every counter exactly.  The
# usage rows are deleted first, so a rebuild from the table would show less.
$node->safe_psql('postgres', "DELETE FROM token_usage WHERE user_id = 'd1'");
my $log_offset = -s $node->logfile;
$node->restart;
is(status($node, 'd1'), $before, 'a clean restart restores every counter exactly');
ok($node->log_contains(qr/rate_limiter: loaded \d+ saved counters/, $log_offset),
	'the counters came from the state file');
ok(!-e $node->data_dir . '/pg_stat/rate_limiter.counters', 'the state file is removed once loaded');

# 2. A corrupt state file is ignored with a LOG message; the counters are
# rebuilt from token_usage, which holds every grant of d2.
$node->safe_psql('postgres', q{
	SELECT set_rate_limit('d2', 1000, '3650 days');
	SELECT set_user_rate_limit('d2', 50, '3650 days');
	SELECT allocate_tokens('d2', 100, 'high') FROM generate_series(1, 5);
});
my $d2 = status($node, 'd2');
$node->stop;
my $file = $node->data_dir . '/pg_stat/rate_limiter.counters';
ok(-e $file, 'a clean shutdown writes the state file');
open(my $fh, '+<:raw', $file) or die "open $file: $!";
seek($fh, 40, 0);
my $byte;
read($fh, $byte, 1);
seek($fh, 40, 0);
print $fh chr(ord($byte) ^ 0xff);
close($fh);
$log_offset = -s $node->logfile;
$node->start;
is(status($node, 'd2'), $d2, 'after a corrupt state file the counters are rebuilt from token_usage');
ok($node->log_contains(qr/ignoring saved counters in "pg_stat\/rate_limiter.counters": checksum mismatch/, $log_offset),
	'the corrupt file is reported');
ok($node->log_contains(qr/rate_limiter: rebuilt \d+ counters of database "postgres"/, $log_offset),
	'the rebuild is logged');

# 3. An immediate shutdown (no state file): rebuilt from the table, exact.
$node->safe_psql('postgres', "SELECT allocate_tokens('d2', 50, 'high') FROM generate_series(1, 3)");
$d2 = status($node, 'd2');
$log_offset = -s $node->logfile;
$node->stop('immediate');
$node->start;
ok(!$node->log_contains(qr/loaded \d+ saved counters/, $log_offset),
	'an immediate shutdown writes no counter file (its backends were killed mid-way)');
is(status($node, 'd2'), $d2, 'after an immediate shutdown the counters are rebuilt exactly');
ok($node->log_contains(qr/rate_limiter: rebuilt \d+ counters/, $log_offset),
	'from token_usage');

# 4. kill -9 of a backend while pgbench allocates: the postmaster resets
# shared memory; afterwards the counter is rebuilt from the committed rows.
# At most the grants of transactions in flight at the kill (one per client)
# are lost, so used after >= used before the kill - clients x 5 tokens.
# The application records each grant in its own table, in the same
# transaction: a committed grant is a row in `granted`.
$node->safe_psql('postgres', "SELECT set_rate_limit('d3', 1000000000, '3650 days');
	CREATE TABLE granted (allocation_id bigint, tokens bigint)");
my $script = PostgreSQL::Test::Utils::tempdir() . '/alloc.sql';
open(my $sf, '>', $script) or die;
print $sf "INSERT INTO granted SELECT allocation_id, tokens_allocated FROM allocate_tokens('d3', 5, 'high');\n";
close($sf);
my ($out, $err) = ('', '');
my $clients = 4;
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', $clients, '-T', '20', '-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);
$node->poll_query_until('postgres', "SELECT coalesce(sum(tokens_used), 0) > 5000 FROM token_usage WHERE user_id = 'd3'")
  or die 'pgbench did not start allocating';
my $victim = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE query LIKE '%allocate_tokens(''d3''%' AND pid <> pg_backend_pid() LIMIT 1");
die 'no pgbench backend found' unless $victim =~ /^\d+$/;
my $used_before = $node->safe_psql('postgres', "SELECT used FROM get_rate_limit_status('d3') WHERE limit_kind = 'tokens'");
kill 'KILL', $victim;
$bench->finish;
$node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
ok($err =~ /server closed the connection|terminating connection|connection to server/ || $out =~ /aborted/,
	'pgbench saw the crash');
my $used_after = $node->safe_psql('postgres', "SELECT used FROM get_rate_limit_status('d3') WHERE limit_kind = 'tokens'");
my $logged = $node->safe_psql('postgres', "SELECT sum(tokens_used) FROM token_usage WHERE user_id = 'd3'");
is($used_after, $logged, "after the crash the counter equals the committed usage rows ($logged tokens)");
cmp_ok($used_after, '>=', $used_before - $clients * 5,
	"no more than the in-flight grants are lost ($used_before before the kill, $used_after after)");
is($node->safe_psql('postgres',
		"SELECT count(*) FROM granted g WHERE NOT EXISTS (SELECT 1 FROM token_usage u WHERE u.id = g.allocation_id)"),
	'0', 'every committed grant has its usage row');
is($node->safe_psql('postgres', 'SELECT sum(tokens) FROM granted'), $used_after,
	'the rebuilt counter equals the committed grants');

# 4b. The same with usage_log = async: the events queued and not yet
# flushed at the kill are lost, about one flush interval (100 ms here) of
# calls.  The bound asserted is what the queue held (see below).
$node->append_conf('postgresql.conf', "rate_limiter.usage_log = 'async'\nrate_limiter.flush_interval = '100ms'");
$node->reload;
$node->safe_psql('postgres', "SELECT set_rate_limit('d4', 1000000000, '3650 days')");
open($sf, '>', $script) or die;
print $sf "SELECT tokens_allocated FROM allocate_tokens('d4', 5, 'high');\n";
close($sf);
($out, $err) = ('', '');
$bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', $clients, '-T', '20', '-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);
my $rows_sql = "SELECT count(*) FROM token_usage WHERE user_id = 'd4'";
$node->poll_query_until('postgres', "SELECT ($rows_sql) > 1000") or die 'async rows do not appear';
my $r0 = $node->safe_psql('postgres', $rows_sql);
my $t0 = Time::HiRes::time();
sleep 1;
my $r1 = $node->safe_psql('postgres', $rows_sql);
my $rate = ($r1 - $r0) / (Time::HiRes::time() - $t0);
$victim = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE query LIKE '%allocate_tokens(''d4''%' AND pid <> pg_backend_pid() LIMIT 1");
die 'no pgbench backend found' unless $victim =~ /^\d+$/;
my ($used, $queued) = split /\|/, $node->safe_psql('postgres',
	"SELECT (SELECT used FROM get_rate_limit_status('d4') WHERE limit_kind = 'tokens'),
	        get_performance_metrics()->>'usage_queue_depth'");
kill 'KILL', $victim;
$bench->finish;
$node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
$used_after = $node->safe_psql('postgres', "SELECT used FROM get_rate_limit_status('d4') WHERE limit_kind = 'tokens'");
is($used_after, $node->safe_psql('postgres', "SELECT sum(tokens_used) FROM token_usage WHERE user_id = 'd4'"),
	'async: after the crash the counter equals the flushed usage rows');
# What can be lost is what the queue held: the events queued at the
# snapshot (normally about one flush interval of calls; more when the
# worker runs behind a busy machine), plus the calls made between the
# snapshot and the kill (well under 0.5 s of calls), plus one per client.
my $bound = int(5 * ($queued + $rate * 0.5 + $clients));
cmp_ok($used - $used_after, '<=', $bound,
	sprintf('async: lost %d tokens (queue held %s events at the snapshot; %.0f calls/s; bound %d)',
		$used - $used_after, $queued, $rate, $bound));
$node->append_conf('postgresql.conf', "rate_limiter.usage_log = 'sync'");
$node->reload;

# 5. A standby refuses to decide; after promotion the counters are rebuilt
# from the replicated usage rows: a user at 90% stays at 90%.
$node->safe_psql('postgres', q{
	SELECT set_rate_limit('p1', 100, '3650 days');
	SET rate_limiter.priority_share_high = 1.0;
	SELECT allocate_tokens('p1', 90, 'high');
});
$node->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b1', has_streaming => 1);
$standby->start;
$node->safe_psql('postgres', "SELECT allocate_tokens('p1', 1, 'high')");   # replicated after the backup
$node->wait_for_catchup($standby);
my ($rc, $stdout, $stderr) = $standby->psql('postgres', "SELECT allocate_tokens('p1', 1, 'high')");
like($stderr, qr/cannot allocate on a hot standby.*\n.*HINT:  Call the primary/s, 'a standby refuses to allocate, and says where to go');
($rc, $stdout, $stderr) = $standby->psql('postgres', "SELECT * FROM get_rate_limit_status('p1')");
like($stderr, qr/counters are kept on the primary server/, 'a standby refuses to report counters it does not keep');
$node->stop;
$standby->promote;
is($standby->safe_psql('postgres', "SELECT used FROM get_rate_limit_status('p1')"), '91',
	'after promotion the counters are rebuilt from the replicated rows: 91 of 100 used');
is($standby->safe_psql('postgres', "SET rate_limiter.priority_share_high = 1.0; SELECT tokens_allocated FROM allocate_tokens('p1', 50, 'high')"),
	'9', 'the promoted server grants only what remains');
$standby->stop;

done_testing();
