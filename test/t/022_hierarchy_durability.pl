# Hierarchies survive restarts and crashes: after a clean restart the links
# are loaded from rate_limit_parents into the new shared memory and the
# counters come from the state file; after an immediate shutdown and after
# a kill -9 of a backend the counters of every level are rebuilt from
# token_usage, each level counting its descendants' rows, exactly.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('hierarchy_durability');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->append_conf('postgresql.conf', "restart_after_crash = on");
$node->append_conf('postgresql.conf', "rate_limiter.usage_log = 'sync'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');
$node->safe_psql('postgres', q{
	SELECT set_rate_limit('tenant', 100000, '3650 days');
	SELECT set_rate_limit('tenant', 30000, '3650 days', 'chat');
	SELECT set_user_rate_limit('team', 1000, '3650 days', algorithm => 'sliding_window');
	SELECT set_rate_limit('u1', 5000, '3650 days', algorithm => 'token_bucket', burst => 4000);
	SELECT set_parent('team', 'tenant');
	SELECT set_parent('u1', 'team');
	SELECT set_parent('u2', 'team');
	SELECT set_parent('u3', 'tenant');
});

# Every level's counters, as u1, u2 and u3 see them.
my $levels = q{
	SELECT string_agg(u || ' ' || coalesce(s.limit_owner, '-') || ' ' || s.scope || ' ' || s.limit_kind
	                  || ' ' || s.used, ', ' ORDER BY u, s.limit_owner, s.scope, s.limit_kind)
	  FROM unnest(ARRAY['u1', 'u2', 'u3']) u, LATERAL get_rate_limit_status(u) s};

sub spend
{
	$node->safe_psql('postgres', q{
		SELECT allocate_tokens('u1', 300, 'high', CASE WHEN g % 2 = 0 THEN 'chat' END) FROM generate_series(1, 6) g;
		SELECT allocate_tokens('u2', 200, 'medium', 'chat') FROM generate_series(1, 5) g;
		SELECT allocate_tokens('u3', 1000, 'low') FROM generate_series(1, 4) g;
		SELECT check_rate_limit('u2') FROM generate_series(1, 3) g;
	});
}

spend();
my $before = $node->safe_psql('postgres', $levels);
like($before, qr/u1 tenant user tokens [1-9]\d*/, 'the tenant was charged');
like($before, qr/u2 team user requests 14/, 'the team counts requests of both members (6 + 5 + 3)');
my $tenant_rows = $node->safe_psql('postgres', 'SELECT sum(tokens_used) FROM token_usage');
like($before, qr/u3 tenant user tokens $tenant_rows(,|$)/, 'the tenant counter equals all usage rows');

$node->restart;
is($node->safe_psql('postgres', $levels), $before, 'a clean restart keeps every level exactly');
is($node->safe_psql('postgres', q{SELECT limit_owner FROM allocate_tokens('u2', 1, 'low', 'chat')}),
	'tenant', 'the links were loaded again after the restart');
$before = $node->safe_psql('postgres', $levels);

my $offset = -s $node->logfile;
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', $levels), $before,
	'after an immediate shutdown every level is rebuilt exactly from token_usage');
ok($node->log_contains(qr/rate_limiter: rebuilt \d+ counters/, $offset), 'the counters were rebuilt');

spend();
$before = $node->safe_psql('postgres', $levels);
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $victim = $bg->query_safe('SELECT pg_backend_pid()');
$offset = -s $node->logfile;
kill 'KILL', $victim;
eval { $bg->quit; };
$node->poll_query_until('postgres', 'SELECT true') or die 'the server did not come back';
is($node->safe_psql('postgres', $levels), $before,
	'after a backend is killed (shared memory reset) every level is rebuilt exactly');
ok($node->log_contains(qr/terminated by signal 9/, $offset), 'the postmaster saw the crash');

$node->stop;
done_testing();
