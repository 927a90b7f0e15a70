# A revocation change that commits while another backend is loading the
# revocation cache is neither lost nor undone.  The loader reads
# token_revocations with a snapshot taken before the change committed, so
# what it read is stale; it must notice (the installation's generation
# moved) and load again.  The testing setting
# rate_limiter.debug_revocation_load_delay_ms holds the loader between
# reading the table and filling the cache, so the commit lands exactly there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('load_race');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');

# Starts a session whose call of is_token_revoked($token) loads the cache
# (it is not loaded: reload_revocations() ran before) and pauses in the
# middle of the load.  Returns once the table has been read.
sub start_slow_load
{
	my ($token) = @_;
	my $loader = $node->background_psql('postgres');
	$loader->query_safe('SET rate_limiter.debug_revocation_load_delay_ms = 1500');
	$loader->query_until(qr/loading/, "\\echo loading\nSELECT is_token_revoked('$token');\n");
	$node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%is_token_revoked(''$token'')%'"
	) or die 'the loader never started';
	usleep(500_000);    # well past the read, inside the pause
	return $loader;
}

sub cache_state
{
	return $node->safe_psql('postgres', 'SELECT state FROM revocation_cache_status()');
}

# A revocation committed during the load is not lost.
$node->safe_psql('postgres', 'SELECT reload_revocations()');
is(cache_state(), 'not_loaded', 'the cache starts unloaded');
my $loader = start_slow_load('raced');
$node->safe_psql('postgres', "SELECT revoke_token('raced')");
# The next query waits for the slow call; its output comes first.
like($loader->query_safe("SELECT 'done'"), qr/^t\ndone/,
	"the loader's own call sees the revocation: it loaded again before answering");
$loader->quit;
is($node->safe_psql('postgres', "SELECT is_token_revoked('raced')"), 't',
	'a revocation committed during a load is in the cache');
is(cache_state(), 'loaded', 'and the cache is loaded');
is($node->safe_psql('postgres',
	"SELECT reason FROM allocate_tokens('u', 1, 'high', session_id => 'raced')"),
	'revoked', 'allocate_tokens denies it');

# An unrevocation committed during the load does not bring it back.
$node->safe_psql('postgres', "SELECT revoke_token('gone'); SELECT reload_revocations();");
$loader = start_slow_load('gone');
$node->safe_psql('postgres', "SELECT unrevoke_token('gone')");
like($loader->query_safe("SELECT 'done'"), qr/^f\ndone/, "the loader's own call does not see it");
$loader->quit;
is($node->safe_psql('postgres', "SELECT is_token_revoked('gone')"), 'f',
	'an unrevocation committed during a load is not undone');
is($node->safe_psql('postgres', "SELECT is_token_revoked('raced')"), 't',
	'other revocations are still there');

$node->stop;
done_testing();
