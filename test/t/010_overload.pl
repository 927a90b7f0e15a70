# Overload: 200 concurrent connections on one key and on 100k random keys,
# then a full counter table under the same load.  Under load only the
# documented refusals may happen (RL429 from enforce_rate_limit, RL507 when
# the table is full and failure_mode = closed); every other error fails the
# test, and exactness holds afterwards.
#
# Not repeated here (see there): the single-session table-full behaviour,
# RL507 / fail_open_table_full and their fail_closed_decisions /
# fail_open_decisions metrics are in sql/counter_capacity.sql; the lock timeout
# (55P03, nothing charged, fail_open_lock_timeout, lock_timeouts metric) is
# in test/t/002_lock_timeout.pl.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $clients = 200;
my $node = PostgreSQL::Test::Cluster->new('overload');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
max_connections = 250
rate_limiter.max_keys = 200000
log_line_prefix = '%m [%p] %e '
fsync = off
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION rate_limiter;
-- Refusals are caught and recorded by SQLSTATE; anything else escapes,
-- aborts the pgbench client and is logged with its SQLSTATE.
CREATE UNLOGGED TABLE ov_refusals (code text);
CREATE FUNCTION ov_enforce(k text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM enforce_rate_limit(k);
  RETURN true;
EXCEPTION WHEN SQLSTATE 'RL429' OR SQLSTATE 'RL507' THEN
  INSERT INTO ov_refusals VALUES (SQLSTATE);
  RETURN false;
END $$;
CREATE FUNCTION ov_allocate(k text, n bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  RETURN (SELECT tokens_allocated FROM allocate_tokens(k, n, 'high'));
EXCEPTION WHEN SQLSTATE 'RL507' THEN
  INSERT INTO ov_refusals VALUES (SQLSTATE);
  RETURN 0;
END $$;
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Runs pgbench with $clients clients; returns the processed transactions.
# Fails when a client aborted or the server logged an unexpected error.
sub bench
{
	my ($name, $script, $txns) = @_;
	my $log_offset = -s $node->logfile;
	my ($stdout, $stderr);
	write_script($name, $script);
	my $ok = IPC::Run::run(
		[
			'pgbench', '-n', '-M', 'prepared', '-c', $clients, '-j', '2',
			'-t', $txns, '-f', "$PostgreSQL::Test::Utils::tmp_check/$name.sql",
			'-h', $node->host, '-p', $node->port, 'postgres'
		],
		'<', \undef, '>', \$stdout, '2>', \$stderr);
	ok($ok, "$name: pgbench with $clients clients completed")
	  or diag("$stdout\n$stderr");
	unlike($stderr // '', qr/aborted/, "$name: no client aborted");
	my $log = substr(slurp_file($node->logfile), $log_offset);
	my @errors = ($log =~ /\] (\w{5}) (?:ERROR|FATAL|PANIC):/g);
	is(join(',', @errors), '', "$name: no error in the server log");
	sql('SELECT rate_limiter_flush()');
	my ($processed) = ($stdout // '') =~ /actually processed: (\d+)/;
	return $processed // 0;
}

sub write_script
{
	my ($name, $script) = @_;
	open my $fh, '>', "$PostgreSQL::Test::Utils::tmp_check/$name.sql" or die $!;
	print $fh $script;
	close $fh;
	return 1;
}

# 1. enforce_rate_limit on one key: 10000 calls against 3000 requests.
sql("SELECT set_user_rate_limit('ov_one', 3000, '3650 days')");
my $calls = bench('enforce_one_key', "SELECT ov_enforce('ov_one');\n", 50);
is($calls, 10000, 'enforce_one_key: every call was answered');
is(sql("SELECT used FROM get_rate_limit_status('ov_one') WHERE scope = 'user' AND limit_kind = 'requests'"),
	'3000', 'enforce_one_key: exactly the limit was allowed');
is(sql("SELECT count(*) FROM token_usage WHERE user_id = 'ov_one'"),
	'3000', 'enforce_one_key: usage rows equal the counter');
is(sql("SELECT count(*) FILTER (WHERE code = 'RL429') || '/' || count(*) FROM ov_refusals"),
	'7000/7000', 'enforce_one_key: every other call was refused with RL429');

# 2. allocate_tokens on 100k random keys under a 10-token default quota.
sql("SELECT set_default_rate_limit(10, '3650 days'); TRUNCATE ov_refusals");
$calls = bench('allocate_random_keys',
	"\\set k random(1, 100000)\nSELECT ov_allocate('ov_r' || :k, 3);\n", 250);
is($calls, 50000, 'allocate_random_keys: every call was answered');
is(sql("SELECT count(*) FROM ov_refusals"), '0', 'allocate_random_keys: nothing refused');
is(sql("SELECT count(*) FROM (SELECT user_id FROM token_usage WHERE user_id LIKE 'ov_r%'
       GROUP BY user_id HAVING sum(tokens_used) > 10) x"),
	'0', 'allocate_random_keys: no key handed out more than its quota');
is(sql("SELECT count(*) FROM (SELECT user_id, sum(tokens_used) AS s FROM token_usage
       WHERE user_id LIKE 'ov_r%' GROUP BY user_id ORDER BY s DESC, user_id LIMIT 200) u
      WHERE s <> (SELECT used FROM get_rate_limit_status(u.user_id) WHERE scope = 'user')"),
	'0', 'allocate_random_keys: usage rows equal the counters (200 busiest keys)');
my $keys = sql("SELECT count(DISTINCT user_id) FROM token_usage WHERE user_id LIKE 'ov_r%'");
cmp_ok($keys, '>', 30000, "allocate_random_keys: $keys distinct keys were used");

# 3. A full table under 200 clients: restart with 64 counters, new keys only.
$node->append_conf('postgresql.conf', 'rate_limiter.max_keys = 64');
$node->restart;
sql("TRUNCATE ov_refusals");
my $m0 = sql("SELECT get_performance_metrics()");
bench('table_full_closed', "\\set k random(1, 100000)\nSELECT ov_allocate('ov_f' || :k, 1);\n", 20);
my $refused = sql("SELECT count(*) FROM ov_refusals WHERE code = 'RL507'");
cmp_ok($refused, '>', 0, "table_full_closed: $refused calls refused with RL507");
is(sql("SELECT (get_performance_metrics()->>'fail_closed_decisions')::bigint
           - ('$m0'::jsonb->>'fail_closed_decisions')::bigint"),
	$refused, 'table_full_closed: each refusal counted in fail_closed_decisions');
is(sql("SELECT count(*) FROM ov_refusals"), $refused, 'table_full_closed: no other refusal');

$node->append_conf('postgresql.conf', "rate_limiter.failure_mode = 'open'");
$node->reload;
$m0 = sql("SELECT get_performance_metrics()");
my $open_before = sql("SELECT count(*) FROM token_usage WHERE user_id LIKE 'ov_g%'");
$calls = bench('table_full_open', "\\set k random(1, 100000)\nSELECT ov_allocate('ov_g' || :k, 1);\n", 20);
is(sql("SELECT count(*) FROM ov_refusals"), $refused, 'table_full_open: nothing refused');
cmp_ok(sql("SELECT (get_performance_metrics()->>'fail_open_decisions')::bigint
               - ('$m0'::jsonb->>'fail_open_decisions')::bigint"),
	'>', 0, 'table_full_open: fail-open grants counted in fail_open_decisions');
is(sql("SELECT reason FROM allocate_tokens('ov_g_last', 1, 'high')"),
	'fail_open_table_full', 'table_full_open: a new key is allowed with fail_open_table_full');

$node->stop;
done_testing();
