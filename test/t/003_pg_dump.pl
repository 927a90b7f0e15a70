# Limits, usage and revocations travel with pg_dump, and a restored database
# enforces the restored limits at once, counting the restored usage.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE source');
$node->safe_psql('source', 'CREATE EXTENSION rate_limiter');
$node->safe_psql('source', q{
	SELECT set_rate_limit('dumped', 100, '3650 days');
	SELECT set_user_rate_limit('dumped', 3, '3650 days', 'chat');
	SELECT set_api_rate_limit('chat', 1000, '1 hour');
	SELECT set_default_rate_limit(50, '1 day');
	INSERT INTO token_revocations (token, reason) VALUES ('stolen', 'leaked in a log');
	SELECT allocate_tokens('dumped', 10, 'high', 'chat', 's1');
});
# Every database has its worker: the usage row is written asynchronously.
$node->safe_psql('source', 'SELECT rate_limiter_flush()');

my $dump = $node->basedir . '/source.sql';
command_ok([ 'pg_dump', '-d', $node->connstr('source'), '-f', $dump ], 'pg_dump succeeds');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored'), '-f', $dump ],
	'the dump restores');

my $q_limits = q{
	SELECT string_agg(concat_ws(':', user_id, api_endpoint, max_tokens_per_period, period_interval), ',' ORDER BY id)
	  FROM token_limits};
my $q_requests = q{
	SELECT string_agg(concat_ws(':', user_id, api_endpoint, max_requests_per_window, window_duration), ',' ORDER BY id)
	  FROM request_limits};
my $q_usage = q{SELECT string_agg(concat_ws(':', user_id, session_id, tokens_used), ',' ORDER BY id) FROM token_usage};
foreach my $q ($q_limits, $q_requests, $q_usage,
	q{SELECT string_agg(token || ':' || reason, ',') FROM token_revocations})
{
	is($node->safe_psql('restored', $q), $node->safe_psql('source', $q), "restored: $q");
}

# Restored limits are enforced in the restored database, and the restored
# usage counts: before its first decision the new installation's counters
# are rebuilt from its token_usage, which holds the source's 10 tokens and
# 1 request.
is($node->safe_psql('restored', "SELECT tokens_allocated, \"limit\" FROM allocate_tokens('dumped', 1000, 'high')"),
	'45|100', 'the restored token quota applies, with the restored usage: floor(0.5 x 90)');
is($node->safe_psql('restored',
	"SELECT count(*) FILTER (WHERE (check_rate_limit('dumped', 'chat')).allowed) FROM generate_series(1, 5)"),
	'2', 'the restored request limit applies, with the restored usage: 3 - 1 left');
is($node->safe_psql('restored', "SELECT tokens_allocated FROM allocate_tokens('someone', 1000, 'high')"),
	'25', 'the restored default applies');
# Sequences were dumped too: new rows do not collide with restored ones.
$node->safe_psql('restored', "SELECT set_rate_limit('new_user', 5)");
is($node->safe_psql('restored', "SELECT count(DISTINCT id) = count(*) FROM token_limits"), 't',
	'new rows get fresh ids');

$node->stop;
done_testing();
