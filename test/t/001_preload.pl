# Without shared_preload_libraries, CREATE EXTENSION and every call fail
# with an error that says how to fix it; with it, everything works.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->start;

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION rate_limiter');
isnt($ret, 0, 'CREATE EXTENSION fails without the preload');
like($err, qr/rate_limiter must be loaded via shared_preload_libraries/,
	'the error names shared_preload_libraries');
like($err, qr/HINT:\s+Add 'rate_limiter' to shared_preload_libraries in postgresql.conf and restart the server/,
	'the hint says how to fix it');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'rate_limiter'"),
	'0', 'nothing was installed');

$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->restart;
is($node->psql('postgres', 'CREATE EXTENSION rate_limiter'), 0, 'CREATE EXTENSION works with the preload');
$node->safe_psql('postgres', "SELECT set_rate_limit('u', 100, '3650 days')");
is($node->safe_psql('postgres', "SELECT tokens_allocated FROM allocate_tokens('u', 80, 'high')"),
	'50', 'allocation works');

# The library removed from the preload list later: calls fail clearly
# instead of crashing or silently allowing everything.
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''");
$node->restart;
foreach my $call ("SELECT * FROM allocate_tokens('u', 1, 'high')",
	"SELECT * FROM check_rate_limit('u')",
	"SELECT * FROM enforce_rate_limit('u')",
	"SELECT get_performance_metrics()")
{
	($ret, $out, $err) = $node->psql('postgres', $call);
	isnt($ret, 0, "fails without the preload: $call");
	like($err, qr/rate_limiter must be loaded via shared_preload_libraries/,
		"and names shared_preload_libraries: $call");
}

$node->stop;
done_testing();
