# 200,000 per-user rules: rules live in one shared-memory table, so a new
# backend's first call and an open session's first call after another
# session's rule change cost about what they cost with 10 rules, and no
# backend's private memory grows with the rules.  (Timings are printed; the
# bounds asserted are generous: the machines are shared and noisy.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('rules_at_scale');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
rate_limiter.max_rules = 450000
rate_limiter.max_keys = 20000
rate_limiter.usage_log = sync
fsync = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE small');
$node->safe_psql($_, 'CREATE EXTENSION rate_limiter') for ('postgres', 'small');

# 200,000 token quotas, 100,000 request limits, 20,000 user+endpoint rules,
# a few endpoint-wide limits and a default; 10 rules in "small".
my $t0 = time;
$node->safe_psql('postgres', q{
INSERT INTO token_limits (user_id, max_tokens_per_period, period_interval)
  SELECT 'u' || g, 1000 + g % 7, '1 day' FROM generate_series(1, 200000) g;
INSERT INTO request_limits (user_id, max_requests_per_window, window_duration)
  SELECT 'u' || g, 100, '1 hour' FROM generate_series(1, 100000) g;
INSERT INTO token_limits (user_id, api_endpoint, max_tokens_per_period, period_interval)
  SELECT 'u' || g, 'chat', 500, '1 hour' FROM generate_series(1, 20000) g;
SELECT set_api_token_limit('chat', 100000000, '1 day');
SELECT set_api_rate_limit('embed', 1000000, '1 minute');
SELECT set_default_rate_limit(50, '1 day');
});
note(sprintf('inserted 320,003 rules in %.2f s', time - $t0));
$node->safe_psql('small', q{
SELECT set_rate_limit('u' || g, 1000 + g % 7, '1 day') FROM generate_series(1, 9) g;
SELECT set_default_rate_limit(50, '1 day');
});

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q); }

# The first load of a database's rules into shared memory (once per server
# start): the first call after the inserts.
$t0 = time;
is(sql('postgres', "SELECT tokens_remaining FROM allocate_tokens('u77', 10, 'high')"), '990',
	'the first call sees its own rule (1000 + 77 % 7 = 1000)');
my $load = time - $t0;
note(sprintf('first call after the bulk insert (loads 320,003 rules): %.0f ms', $load * 1000));
is(sql('postgres', "SELECT (get_performance_metrics()->>'rules_in_use')::bigint >= 320003"), 't',
	'every rule is in the shared table');
is(sql('postgres', "SELECT get_performance_metrics()->>'rules_overflowed_databases'"), '0',
	'nothing overflowed');

# The first call of a new backend, timed inside the backend (connection
# setup excluded), median of 7 fresh connections.
sub first_call_ms
{
	my ($db, $user) = @_;
	my @t;
	for my $i (1 .. 7)
	{
		push @t, sql($db, qq{
SELECT clock_timestamp() AS t0 \\gset
SELECT success FROM allocate_tokens('$user', 1, 'high', 'chat') \\gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000, 3)});
	}
	@t = sort { $a <=> $b } @t;
	return $t[3];
}
my $big = first_call_ms('postgres', 'u12345');
my $small = first_call_ms('small', 'u3');
note(sprintf('first call of a new backend: %.3f ms with 320,003 rules, %.3f ms with 10 (difference %.3f ms)',
		$big, $small, $big - $small));
cmp_ok($big, '<', 100, 'a new backend decides its first call quickly at 320,003 rules');

# Private memory of a backend after its first call: the same at 320,003
# rules as at 10.
sub backend_bytes
{
	my ($db) = @_;
	return sql($db, q{SELECT success FROM allocate_tokens('u5', 1, 'high') \gset
SELECT sum(total_bytes) FROM pg_backend_memory_contexts});
}
my $mem_big = backend_bytes('postgres');
my $mem_small = backend_bytes('small');
note("backend memory after the first call: $mem_big bytes (320,003 rules), $mem_small bytes (10 rules)");
cmp_ok($mem_big - $mem_small, '<', 1024 * 1024, 'backend memory does not grow with the rules');

# An open session's first call after another session's rule change.
my $a = $node->background_psql('postgres');
$a->query_safe("SELECT allocate_tokens('u1', 1, 'high')");
my @after;
for my $i (1 .. 7)
{
	my $user = 'u' . (1000 + $i);
	sql('postgres', "SELECT set_rate_limit('$user', 7000 + $i, '1 day')");
	my $out = $a->query_safe(qq{SELECT clock_timestamp() AS t0 \\gset
SELECT "limit" FROM allocate_tokens('$user', 1, 'high') \\gset
SELECT :'limit' || ' ' || round(extract(epoch FROM clock_timestamp() - :'t0') * 1000, 3)});
	my ($limit, $ms) = split ' ', $out;
	is($limit, 7000 + $i, "the open session sees change $i at once");
	push @after, $ms;
}
@after = sort { $a <=> $b } @after;
note(sprintf('first call after a rule change in another session: median %.3f ms', $after[3]));
cmp_ok($after[3], '<', 100, 'a rule change costs open sessions no reload');

# Removing a rule, and an uncommitted change in another session, are seen
# exactly as committed.
sql('postgres', "SELECT remove_rate_limit('u2000')");
is($a->query_safe("SELECT scope FROM allocate_tokens('u2000', 1, 'high')"), 'default',
	'a removed rule falls back to the default');
$a->quit;

# After a restart the rules load again at first use; a fast shutdown of a
# server with 320,003 rules is prompt.
$t0 = time;
$node->stop('fast');
my $stop = time - $t0;
note(sprintf('fast shutdown: %.2f s', $stop));
cmp_ok($stop, '<', 30, 'fast shutdown completes promptly');
$node->start;
$t0 = time;
is(sql('postgres', "SELECT \"limit\" FROM allocate_tokens('u1007', 1, 'high')"), '7007',
	'rules are back after a restart');
note(sprintf('first call after a restart (loads the rules again): %.0f ms', (time - $t0) * 1000));

$node->stop;
done_testing();
