# settle_tokens across restarts and crashes: a clean restart keeps each
# counter's generation (the state file), so a grant made before it is
# refunded exactly, and a reset after it still voids older grants; after an
# immediate shutdown or a kill -9 the counters are rebuilt from token_usage
# and take no refund of a grant made before the rebuild (they hold the rows
# as they are, not the live charges), so no settle can hand quota out twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('settle_restart');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'rate_limiter'
rate_limiter.usage_log = sync
rate_limiter.priority_share_high = 1.0
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub used {
	return sql("SELECT used FROM get_rate_limit_status('$_[0]') WHERE limit_kind = 'tokens' AND scope = 'user'");
}
sub grant { return sql("SELECT allocation_id FROM allocate_tokens('$_[0]', $_[1], 'high')"); }
sub settle { return sql("SELECT tokens_refunded FROM settle_tokens($_[0], $_[1])"); }

sql(q{SELECT set_rate_limit('sr_clean', 1000, '3650 days')});
sql(q{SELECT set_rate_limit('sr_reset', 1000, '3650 days')});
sql(q{SELECT set_rate_limit('sr_crash', 1000, '3650 days')});
my $a1 = grant('sr_clean', 600);
my $a2 = grant('sr_clean', 300);
my $r1 = grant('sr_reset', 400);
my $c1 = grant('sr_crash', 500);

# 1. Clean restart: the generations come back with the counters.
$node->restart;
is(used('sr_clean'), '900', 'a clean restart restores the counter');
is(settle($a1, 100), '500', 'settle after a clean restart');
is(used('sr_clean'), '400', 'the grant made before the restart is refunded exactly');
sql(q{SELECT reset_rate_limit('sr_reset')});
is(sql(q{SELECT tokens_allocated FROM allocate_tokens('sr_reset', 1000, 'high')}), '1000',
	'the reset window grants its whole limit');
settle($r1, 0);
is(used('sr_reset'), '1000', 'a reset after the restart voids the refund of an older grant');
is(sql(q{SELECT tokens_allocated FROM allocate_tokens('sr_reset', 1000, 'high')}), '0',
	'and the window hands out no more than its limit');

# 2. Immediate shutdown: no state file, the counters are rebuilt.
$node->stop('immediate');
$node->start;
is(used('sr_clean'), '400', 'rebuilt from the rows: the settled row counts its actual usage');
settle($a2, 0);
is(used('sr_clean'), '400', 'a rebuilt counter takes no refund of a grant from before the rebuild');
is(sql(q{SELECT tokens_allocated FROM allocate_tokens('sr_clean', 1000, 'high')}), '600',
	'the window hands out exactly its limit in all');

# 3. kill -9 of a backend: the postmaster restarts everything, the
# counters are rebuilt, and the same holds.
my $bg = $node->background_psql('postgres');
my $victim = $bg->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $victim;
eval { $bg->quit; };
$node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
is(used('sr_crash'), '500', 'after kill -9 the counter is rebuilt from its row');
settle($c1, 0);
is(used('sr_crash'), '500', 'the settle of a pre-crash grant gives the rebuilt counter nothing');
my $new = grant('sr_crash', 200);
settle($new, 50);
is(used('sr_crash'), '550', 'a grant made after the rebuild is refunded exactly');

$node->stop;
done_testing();
