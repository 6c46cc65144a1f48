using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Host.Infrastructure;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The service's PostgreSQL connections do not auto-prepare statements unless the connection string asks for it: with
/// Npgsql 10.0.3, statements that failed while being auto-prepared left pooled connections whose later requests failed
/// with "Received unexpected backend message DataRow" (see PersistenceSetup.Tuned). The requests that did it are
/// refused before the database now (BadInputTests), so this guards the setting itself.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class DatabaseConnectionTests(ConversationsApp app)
{
    [Fact]
    public async Task The_running_service_connects_without_automatic_preparation()
    {
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();
        await using var connection = store.Storage.Database.CreateConnection();

        var settings = new NpgsqlConnectionStringBuilder(connection.ConnectionString);

        Assert.Equal(0, settings.MaxAutoPrepare);
        Assert.True(settings.NoResetOnClose);
    }

    [Fact]
    public void A_connection_string_that_asks_for_automatic_preparation_keeps_it()
    {
        var tuned = new NpgsqlConnectionStringBuilder(PersistenceSetup.Tuned("Host=db;Database=chat;Max Auto Prepare=20;No Reset On Close=false"));

        Assert.Equal(20, tuned.MaxAutoPrepare);
        Assert.False(tuned.NoResetOnClose);
    }
}
